/**
 * `vsphere:DC/vm/NAME`: a vSphere VM, named by its inventory path (agents/drivers/vsphere). The
 * engine is a vCenter or ESXi host's SOAP endpoint that the agent is given (`--vsphere-url`); an
 * agent without it serves no VM. A backup reads every disk from a VM snapshot (some of them
 * with --include-disk / --exclude-disk); a restore makes a new VM (`--name`, with folder, pool,
 * datastore and network remaps), writes the disks back in place (`--in-place`), or attaches one
 * disk to a VM that exists (`--disk LABEL --attach-to vsphere:DC/vm/OTHER`).
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import { collected, stateFlag, stateOption } from './options';
import { flagPairs, type CliFlag, type EngineSpec, type PlatformSpec } from './spec';

export const VSPHERE_ENGINE: EngineSpec = {
  id: 'vsphere',
  flags: [
    {
      flags: '--vsphere-url <url>',
      help: 'vCenter or ESXi SDK URL (https://vc.example.com/sdk; http:// for the simulator); without it no vSphere driver',
      env: 'STOWAGE_VSPHERE_URL',
      setting: 'endpoint',
    },
    {
      flags: '--vsphere-user <user>',
      help: 'the vSphere user (administrator@vsphere.local)',
      env: 'STOWAGE_VSPHERE_USER',
      setting: 'user',
    },
    {
      flags: '--vsphere-password-file <file>',
      help: "a file holding the vSphere user's password (never the password itself)",
      env: 'STOWAGE_VSPHERE_PASSWORD_FILE',
      setting: 'passwordFile',
    },
    {
      flags: '--vsphere-insecure',
      help: "accept any TLS certificate from vSphere (default: verified against the system's CAs)",
      setting: 'insecure',
    },
    {
      flags: '--vcd-url <url>',
      help: 'vCloud Director (https://vcd.example.com): vApp jobs in its maintenance mode, its metadata kept and put back',
      env: 'STOWAGE_VCD_URL',
      setting: 'vcdUrl',
    },
    {
      flags: '--vcd-user <user@org>',
      help: 'the vCloud Director user (user@org; administrator@System for the provider)',
      env: 'STOWAGE_VCD_USER',
      setting: 'vcdUser',
    },
    {
      flags: '--vcd-password-file <file>',
      help: "a file holding the vCloud Director user's password",
      env: 'STOWAGE_VCD_PASSWORD_FILE',
      setting: 'vcdPasswordFile',
    },
  ],
};

const EXAMPLE = 'for example vsphere:DC0/vm/appliance';

/**
 * An inventory path `DC/vm/NAME`, folders allowed around (`F/DC/vm/prod/web`): no empty segment,
 * a `vm` segment after the datacenter and before the VM's name. A VM name is at most 80
 * characters and vSphere escapes `/`, `%` and `\` in names, so they never appear raw here.
 */
export function splitVmPath(name: string): { datacenter: string; folder: string; vm: string } {
  const parts = name.split('/');
  const vmAt = parts.lastIndexOf('vm');
  if (parts.some((p) => p.length === 0) || vmAt < 1 || vmAt === parts.length - 1) {
    throw new ValidationError(
      `"${name}" is not a VM inventory path: write DATACENTER/vm/NAME, with any folders after vm (${EXAMPLE})`,
    );
  }
  const vm = parts[parts.length - 1]!;
  if (vm.length > 80 || /[%\\]/.test(vm)) {
    throw new ValidationError(`"${vm}" is not a usable VM name (1-80 characters, no % or \\)`);
  }
  return {
    datacenter: parts.slice(0, vmAt).join('/'),
    folder: parts.slice(0, -1).join('/'),
    vm,
  };
}

/** `vsphere:DC/vm/NAME` or `DC/vm/NAME` as the VM's path. */
export function vmPathOf(text: string): string {
  const path = text.startsWith('vsphere:') ? text.slice('vsphere:'.length) : text;
  splitVmPath(path);
  return path;
}

const label = z.string().min(1, 'a disk label is not empty, e.g. "Hard disk 1"');

export const vmBackupOptions = z
  .object({
    disks: z
      .object({ include: z.array(label).min(1).optional(), exclude: z.array(label).optional() })
      .strict()
      .optional(),
  })
  .strict();

const inventoryPath = z.string().min(1).max(4096);

/** The placement options of a restore (new VM or vApp); shared with vapp.ts. */
export const placementOptions = {
  folder: inventoryPath.optional(),
  resourcePool: inventoryPath.optional(),
  datastore: z.string().min(1).max(255).optional(),
  networks: z.record(z.string(), z.string().min(1)).optional(),
};

const restoreOptions = z
  .object({
    ...placementOptions,
    disk: label.optional(),
    attachTo: z
      .string()
      .refine((t) => {
        try {
          vmPathOf(t);
          return true;
        } catch {
          return false;
        }
      }, 'attachTo is a VM: vsphere:DATACENTER/vm/NAME')
      .optional(),
    controllerKey: z.number().int().min(0).optional(),
    unitNumber: z.number().int().min(0).max(64).optional(),
    state: stateOption.optional(),
  })
  .strict()
  .refine((o) => (o.disk === undefined) === (o.attachTo === undefined), {
    path: ['attachTo'],
    message: '"disk" and "attachTo" go together: one disk of the point attached to a VM',
  })
  .refine((o) => (o.controllerKey === undefined && o.unitNumber === undefined) || o.attachTo, {
    path: ['controllerKey'],
    message: '"controllerKey" and "unitNumber" place the disk that "attachTo" attaches',
  });

export const vmBackupFlags: readonly CliFlag[] = [
  {
    flags: '--include-disk <label>',
    help: 'vSphere: back up only this disk (repeatable; default every disk)',
    repeatable: true,
    toBody: (v) => (collected(v).length ? { disks: { include: collected(v) } } : {}),
  },
  {
    flags: '--exclude-disk <label>',
    help: 'vSphere: leave this disk out (repeatable; the configuration still records it)',
    repeatable: true,
    toBody: (v) => (collected(v).length ? { disks: { exclude: collected(v) } } : {}),
  },
];

/** Where a new VM (or vApp) goes: its folder, pool, datastore, networks; shared with vapp.ts. */
export const placementFlags: readonly CliFlag[] = [
  {
    flags: '--folder <path>',
    help: 'vSphere: the VM folder of the new VM (DC/vm/prod)',
    toBody: (v) => (v ? { folder: v } : {}),
  },
  {
    flags: '--resource-pool <path>',
    help: 'vSphere: its resource pool (DC/host/CLUSTER/Resources/POOL)',
    toBody: (v) => (v ? { resourcePool: v } : {}),
  },
  {
    flags: '--datastore <name>',
    help: 'vSphere: the datastore for its files and disks',
    toBody: (v) => (v ? { datastore: v } : {}),
  },
  {
    flags: '--network-map <old=new>',
    help: 'vSphere: put the cards that were on network OLD on NEW (repeatable)',
    repeatable: true,
    toBody: (v) =>
      collected(v).length ? { networks: flagPairs(collected(v), '--network-map') } : {},
  },
];

const restoreFlags: readonly CliFlag[] = [
  ...placementFlags,
  {
    flags: '--disk <label>',
    help: 'vSphere: restore only this disk, attached to the VM --attach-to names',
    toBody: (v) => (v ? { disk: v } : {}),
  },
  {
    flags: '--attach-to <vm>',
    help: 'vSphere: with --disk, the VM to attach it to (vsphere:DC/vm/NAME)',
    toBody: (v) => (v ? { attachTo: v } : {}),
  },
  {
    flags: '--controller <key>',
    help: "vSphere: with --attach-to, the disk controller's device key",
    number: true,
    toBody: (v) => (v !== undefined ? { controllerKey: v } : {}),
  },
  {
    flags: '--unit <n>',
    help: 'vSphere: with --attach-to, the unit number on that controller',
    number: true,
    toBody: (v) => (v !== undefined ? { unitNumber: v } : {}),
  },
  stateFlag,
];

export const vsphere = {
  name: 'vsphere',
  noun: 'vSphere VM',
  example: 'vsphere:DC0/vm/appliance',
  checkName: (name: string) => void splitVmPath(name),
  listed: true,
  snapshots: true,
  snapshotRestoreState: true,
  backupOptions: vmBackupOptions,
  restoreOptions,
  /**
   * `--name NEW` is NEW in the original's folder (or in `--folder`); a path `DC/vm/.../NEW` is
   * taken as it is. `--disk L --attach-to VM` restores into VM, which must exist.
   */
  restoreName(source, name, options) {
    if (typeof options.attachTo === 'string') {
      const into = vmPathOf(options.attachTo);
      if (name !== undefined && name !== into) {
        throw new ValidationError(
          `--disk attaches to ${options.attachTo}; do not give another --name (${name}) with it`,
        );
      }
      return into;
    }
    if (name === undefined || name.includes('/')) return name;
    const folder = typeof options.folder === 'string' ? options.folder : splitVmPath(source).folder;
    return `${folder}/${name}`;
  },
  restoresInto: (options) => typeof options.attachTo === 'string',
  engine: VSPHERE_ENGINE,
  cli: { backup: vmBackupFlags, restore: restoreFlags },
} as const satisfies PlatformSpec<'vsphere'>;
