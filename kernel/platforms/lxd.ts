/**
 * `lxd:NAME`: an LXD instance (agents/drivers/lxd). Also the LXD engine, its name rules and the
 * options that the instance, custom volume (lxd-volume.ts) and server (lxd-server.ts) share.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import { consistency, consistencyFlag, stateFlag, stateOption } from './options';
import {
  planBytes,
  ranAtBackup,
  runsNow,
  streamSize,
  type PlanInput,
  type PlatformPlan,
  type PlanStep,
} from './restore-plan';
import type { CliFlag, EngineSpec, PlatformSpec } from './spec';

/** Whether an instance or volume point was read on the host as tree streams (host-tree.ts). */
export function hasTree(input: PlanInput): boolean {
  return input.point.streams.some((s) => s.name === 'tree');
}

/** The bytes of a tree point's data streams (`tree`, `snapshot/NAME`), indexes left out. */
export function treeBytes(input: PlanInput): number {
  return input.point.streams
    .filter((s) => !s.name.endsWith('.index'))
    .reduce((n, s) => n + s.size, 0);
}

/**
 * An instance restore (agents/drivers/lxd restore.ts): the profiles it uses that the server
 * lacks, then the instance imported (under a temporary name first when in place, the original
 * stopped and replaced only then), devices overridden, started as at backup or as --state says.
 */
function planInstanceRestore(input: PlanInput): PlatformPlan {
  const { name, inPlace, options, point } = input;
  const type = String(point.summary.type ?? 'instance');
  const snapshots = Number(point.summary.snapshots ?? 0);
  const profiles = String(point.summary.profiles ?? '');
  const pool = typeof options.pool === 'string' ? options.pool : undefined;
  const devices = (options.devices ?? {}) as Record<string, Record<string, string>>;
  const exportSize = planBytes(streamSize(input, 'export'));
  const treeSize = planBytes(treeBytes(input));
  const instance = `${type} ${name}`;
  const steps: PlanStep[] = [];
  if (profiles) {
    steps.push({
      action: 'create',
      what: `profiles ${profiles.split(',').join(', ')}`,
      detail: 'those the server lacks, from their recorded definitions',
    });
  }
  const made = hasTree(input)
    ? `created empty, then filled in its pool's directory from the point's trees (${treeSize})`
    : `imported from the export (${exportSize})`;
  const imported = `${made}${snapshots ? ` with its ${snapshots} snapshot(s)` : ''}${pool ? `, root disk in pool ${pool}` : ''}`;
  if (inPlace && input.existing) {
    steps.push({ action: 'create', what: `${type} under a temporary name`, detail: imported });
    if (runsNow(input)) steps.push({ action: 'stop', what: instance });
    steps.push({ action: 'replace', what: instance, detail: 'the import renamed over it' });
  } else {
    steps.push({ action: 'create', what: instance, detail: imported });
  }
  for (const [device, keys] of Object.entries(devices)) {
    steps.push({
      action: 'remap',
      what: `device ${device}`,
      detail: Object.entries(keys)
        .map(([k, v]) => (v === '' ? `${k} dropped` : `${k}=${v}`))
        .join(', '),
    });
  }
  const start = options.state === undefined ? ranAtBackup(input) : options.state === 'running';
  steps.push(
    start
      ? {
          action: 'start',
          what: instance,
          detail: options.state ? '--state running' : 'it ran at backup time',
        }
      : {
          action: 'skip',
          what: `starting ${instance}`,
          detail: options.state ? '--state stopped' : 'it was stopped at backup time',
        },
  );
  return { steps };
}

export const LXD_ENGINE: EngineSpec = {
  id: 'lxd',
  defaultEndpoint: '/var/lib/lxd/unix.socket',
  flags: [
    {
      flags: '--lxd-socket <path>',
      help: "the LXD daemon's unix socket (default /var/lib/lxd/unix.socket)",
      env: 'STOWAGE_LXD_SOCKET',
      setting: 'endpoint',
    },
    {
      flags: '--lxd-project <name>',
      help: 'the LXD project whose instances and volumes it serves (default default)',
      env: 'STOWAGE_LXD_PROJECT',
      setting: 'project',
    },
  ],
};

/** LXD's rule for instance names: a hostname label (letters, digits, dashes), 1-63 characters. */
export function isValidInstanceName(name: string): boolean {
  return /^[a-zA-Z][a-zA-Z0-9-]{0,62}$/.test(name) && !name.endsWith('-');
}

/** LXD's rule for storage pool names: no slash or white space, not starting with a dash. */
export function isValidPoolName(pool: string): boolean {
  return pool.length > 0 && !pool.startsWith('-') && !/[/\s]/.test(pool);
}

export const poolOption = z
  .string()
  .refine(isValidPoolName, 'a pool name has no slash or white space and does not start with -');

/** What a backup of an instance, a custom volume or a server may ask. */
export const lxdBackupOptions = z
  .object({
    consistency: consistency.optional(),
    snapshots: z.boolean().optional(),
    optimizedStorage: z.boolean().optional(),
  })
  .strict();

export const lxdBackupFlags: readonly CliFlag[] = [
  consistencyFlag,
  {
    flags: '--no-snapshots',
    help: 'LXD: the instance or custom volume alone, without its snapshots',
    toBody: (value) => (value === false ? { snapshots: false } : {}),
  },
  {
    flags: '--optimized-storage',
    help: "LXD: the pool driver's own format where it has one (zfs, btrfs; not dir)",
    toBody: (value) => (value ? { optimizedStorage: true } : {}),
  },
];

export const poolFlag: CliFlag = {
  flags: '--pool <pool>',
  help: 'LXD: the storage pool for the instance (root disk) or custom volume',
  toBody: (value) => (value ? { pool: value } : {}),
};

/**
 * `--device NAME,KEY=VALUE[,KEY=VALUE...]` flags as `{ NAME: { KEY: VALUE } }`; several flags
 * for one device add up. `KEY=` (empty) asks the restore to drop that key.
 */
function deviceOverrides(values: string[]): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const v of values) {
    const [name, ...settings] = v.split(',');
    if (!name || settings.length === 0) {
      throw new ValidationError(
        `--device takes NAME,KEY=VALUE[,KEY=VALUE...] (got "${v}"), e.g. eth0,type=none`,
      );
    }
    const pairs: Record<string, string> = {};
    for (const s of settings) {
      const eq = s.indexOf('=');
      if (eq <= 0) throw new ValidationError(`--device ${name} takes KEY=VALUE (got "${s}")`);
      pairs[s.slice(0, eq)] = s.slice(eq + 1);
    }
    out[name] = { ...(out[name] ?? {}), ...pairs };
  }
  return out;
}

export const lxd = {
  name: 'lxd',
  noun: 'LXD instance',
  example: 'lxd:c1',
  checkName(name: string): void {
    if (!isValidInstanceName(name)) {
      throw new ValidationError(
        `"${name}" is not a valid LXD instance name (letters, digits and dashes, 1-63, starting with a letter, not ending with a dash)`,
      );
    }
  },
  listed: true,
  snapshots: true,
  backupOptions: lxdBackupOptions,
  restoreOptions: z
    .object({
      pool: poolOption.optional(),
      devices: z
        .record(
          z
            .string()
            .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a device name is letters, digits, . _ -'),
          z.record(
            z
              .string()
              .regex(/^[a-z][a-z0-9_.-]*$/, 'a device key is lower-case, e.g. pool or network'),
            z.string(),
          ),
        )
        .optional(),
      state: stateOption.optional(),
    })
    .strict(),
  engine: LXD_ENGINE,
  cli: {
    backup: lxdBackupFlags,
    restore: [
      poolFlag,
      {
        flags: '--device <name,key=value,...>',
        help: 'LXD: override a device of the instance (repeatable), e.g. eth0,type=none or data,source=/srv',
        repeatable: true,
        toBody: (value) =>
          Array.isArray(value) && value.length > 0 ? { devices: deviceOverrides(value) } : {},
      },
      stateFlag,
    ],
  },
  planRestore: planInstanceRestore,
} as const satisfies PlatformSpec<'lxd'>;
