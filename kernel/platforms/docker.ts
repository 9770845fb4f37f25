/**
 * `docker:NAME`: a container with its volumes (agents/drivers/docker). The only platform whose
 * targets can be chosen by label (`docker:KEY=VALUE[,KEY=VALUE...][@AGENT]`): only Docker
 * targets carry labels in the inventory, and a Compose project is already one target.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import {
  collected,
  consistency,
  consistencyFlag,
  dockerName,
  fullRead,
  fullReadFlag,
  isValidDockerName,
  treeRestoreFlags,
  treeRestoreShape,
} from './options';
import {
  planBytes,
  ranAtBackup,
  runsNow,
  streamSize,
  streamsUnder,
  type PlanInput,
  type PlanStep,
  type PlatformPlan,
} from './restore-plan';
import {
  flagPairs,
  type CliFlag,
  type EngineSpec,
  type PlatformSpec,
  type SelectorCapability,
} from './spec';

export const DOCKER_ENGINE: EngineSpec = {
  id: 'docker',
  defaultEndpoint: '/var/run/docker.sock',
  flags: [
    {
      flags: '--docker-socket <path>',
      help: "dockerd's unix socket (default /var/run/docker.sock)",
      env: 'STOWAGE_DOCKER_SOCKET',
      setting: 'endpoint',
    },
  ],
};

const hook = z
  .object({
    command: z.array(z.string()).min(1, 'a hook needs a command (argv, at least one element)'),
    timeoutSeconds: z.number().int().min(1).max(86_400).optional(),
    onError: z.enum(['fail', 'continue']).optional(),
  })
  .strict();

/** What a backup of a container (or a Compose project) may ask. */
export const containerBackupOptions = z
  .object({
    consistency: consistency.optional(),
    includeBinds: z.boolean().optional(),
    fullRead: fullRead.optional(),
    hooks: z
      .object({ pre: z.array(hook).optional(), post: z.array(hook).optional() })
      .strict()
      .optional(),
  })
  .strict();

/** The hooks' flags: `--pre-hook` and `--post-hook` carry the commands, the others shape them. */
function hookFlag(phase: 'pre' | 'post', help: string): CliFlag {
  return {
    flags: `--${phase}-hook <command>`,
    help,
    repeatable: true,
    toBody: (value, flags) => {
      const commands = collected(value);
      if (commands.length === 0) return {};
      const hooks = commands.map((command) => ({
        command: ['sh', '-c', command],
        ...(flags.hookTimeout ? { timeoutSeconds: flags.hookTimeout } : {}),
        ...(flags.hookOnError ? { onError: flags.hookOnError } : {}),
      }));
      return { hooks: { [phase]: hooks } };
    },
  };
}

export const containerBackupFlags: readonly CliFlag[] = [
  consistencyFlag,
  fullReadFlag,
  {
    flags: '--include-binds',
    help: 'also capture bind-mounted host directories (Docker)',
    toBody: (value) => (value ? { includeBinds: true } : {}),
  },
  hookFlag('pre', 'run this (sh -c) inside the workload before the capture'),
  hookFlag('post', 'run this (sh -c) inside the workload after it'),
  {
    flags: '--hook-timeout <seconds>',
    help: 'per hook (default 60)',
    number: true,
    toBody: () => ({}),
  },
  {
    flags: '--hook-on-error <policy>',
    help: 'fail (default) or continue',
    choices: ['fail', 'continue'],
    toBody: () => ({}),
  },
];

const restoreOptions = z
  .object({
    volumes: z.record(z.string(), dockerName).optional(),
    network: dockerName.optional(),
    ports: z
      .record(
        z.string(),
        z.string().regex(/^(\d{1,5})?$/, 'a host port is a number, or "" to drop it'),
      )
      .refine((ports) => Object.keys(ports).every((p) => /^\d+(\/(tcp|udp|sctp))?$/.test(p)), {
        message: 'a container port is written 80 or 80/tcp',
      })
      .optional(),
    volume: z.string().min(1).optional(),
    intoVolume: dockerName.optional(),
    ...treeRestoreShape,
  })
  .strict()
  .refine((o) => o.intoVolume === undefined || o.volume !== undefined || o.files !== undefined, {
    path: ['intoVolume'],
    message: '"intoVolume" goes with "volume" (the volume of the point to restore) or "files"',
  });

const restoreFlags: readonly CliFlag[] = [
  {
    flags: '--volume-name <old=new>',
    help: 'name a restored volume (repeatable)',
    repeatable: true,
    toBody: (v) => (v ? { volumes: flagPairs(collected(v), '--volume-name') } : {}),
  },
  {
    flags: '--network <name>',
    help: 'attach the restored container to this network instead',
    toBody: (v) => (v ? { network: v } : {}),
  },
  {
    flags: '--port <port=host>',
    help: 'publish a container port on another host port; empty drops it',
    repeatable: true,
    toBody: (v) => (v ? { ports: flagPairs(collected(v), '--port') } : {}),
  },
  {
    flags: '--volume <name>',
    help: 'restore only this volume of the point',
    toBody: (v) => (v ? { volume: v } : {}),
  },
  {
    flags: '--into <volume>',
    help: 'with --volume or --file: the volume to restore into',
    toBody: (v) => (v ? { intoVolume: v } : {}),
  },
  ...treeRestoreFlags,
  {
    flags: '--into-volume <volume>',
    help: 'with --file: the Docker volume to write them into (created when missing)',
    toBody: (v) => (v ? { intoVolume: v } : {}),
  },
];

const SELECTOR_FORM = 'docker:KEY=VALUE[,KEY=VALUE...][@AGENT], for example docker:app=web';

/** `KEY=VALUE[,KEY=VALUE...]`: a value may hold `=` and be empty; a key is any string. */
function parseLabels(body: string, text: string): Array<[string, string]> {
  // A Map, not an object: a label key may be any string, `constructor` or `__proto__` included.
  const labels = new Map<string, string>();
  for (const pair of body.split(',')) {
    const eq = pair.indexOf('=');
    const key = eq > 0 ? pair.slice(0, eq).trim() : '';
    if (!key) {
      throw new ValidationError(
        `selector "${text}": "${pair}" is not KEY=VALUE; write ${SELECTOR_FORM}`,
      );
    }
    if (labels.has(key)) {
      throw new ValidationError(`selector "${text}" names the label "${key}" twice`);
    }
    labels.set(key, pair.slice(eq + 1));
  }
  return [...labels];
}

const selector: SelectorCapability = {
  noun: 'container',
  form: SELECTOR_FORM,
  hint: "`docker inspect -f '{{json .Config.Labels}}' NAME` shows a container's labels",
  parse: parseLabels,
};

/**
 * A container restore (agents/drivers/docker restore.ts, restore-in-place.ts,
 * restore-volume.ts): under a new name, new volumes `<name>_<volume>` (or as remapped) and
 * `<name>_bind<i>` for captured bind mounts; in place, every stream read into temporary volumes
 * first, then the container stopped, set aside and replaced with its volumes' contents.
 */
function planContainerRestore(input: PlanInput): PlatformPlan {
  const { name, inPlace, options } = input;
  const volumes = streamsUnder(input, 'volume');
  const binds = streamsUnder(input, 'bind');
  const remapped = (options.volumes ?? {}) as Record<string, string>;
  const size = (stream: string) => planBytes(streamSize(input, stream));
  if (typeof options.volume === 'string') {
    const into = typeof options.intoVolume === 'string' ? options.intoVolume : options.volume;
    return {
      streams: [`volume/${options.volume}`],
      steps: [
        {
          action: inPlace ? 'replace' : 'create',
          what: `volume ${into}`,
          detail: `${inPlace ? 'its contents, ' : ''}from volume ${options.volume} of the point (${size(`volume/${options.volume}`)}); no container is created, stopped or started`,
        },
      ],
      notes: [
        inPlace
          ? 'refused if a running container mounts it'
          : 'refused if it exists and holds anything',
      ],
    };
  }
  const steps: PlanStep[] = [];
  const image = String(input.point.summary.image ?? 'its image');
  if (inPlace && input.existing) {
    steps.push({
      action: 'read',
      what: `${volumes.length} temporary volume(s)`,
      detail: 'every stream read first, while the container keeps running',
    });
    if (runsNow(input)) steps.push({ action: 'stop', what: `container ${name}` });
    steps.push({
      action: 'rename',
      what: `container ${name}`,
      detail: `set aside as ${name}-stowage-old-<id>, then removed`,
    });
    for (const v of volumes) {
      const to = remapped[v] ?? v;
      steps.push({
        action: 'replace',
        what: `volume ${to}`,
        detail: `its contents, from volume ${v} of the point (${size(`volume/${v}`)})`,
      });
    }
    steps.push({
      action: 'replace',
      what: `container ${name}`,
      detail: `from the committed image of the point (created from ${image})`,
    });
  } else {
    steps.push({
      action: 'create',
      what: `image stowage/${input.sourceName}:<id>`,
      detail: `the container's committed image (${size('image')}), unless dockerd has it`,
    });
    for (const v of volumes) {
      steps.push({
        action: 'create',
        what: `volume ${remapped[v] ?? `${name}_${v}`}`,
        detail: `copy of volume ${v} (${size(`volume/${v}`)})`,
      });
    }
    for (const b of binds) {
      steps.push({
        action: 'create',
        what: `volume ${name}_bind${b}`,
        detail: `copy of bind mount ${b} (${size(`bind/${b}`)}); the host path is not written`,
      });
    }
    steps.push({
      action: 'create',
      what: `container ${name}`,
      detail: `with the recorded configuration (created from ${image})`,
    });
  }
  for (const [v, to] of Object.entries(remapped)) {
    steps.push({ action: 'remap', what: `volume ${v}`, detail: `to ${to}` });
  }
  if (typeof options.network === 'string') {
    steps.push({
      action: 'remap',
      what: 'network',
      detail: `attached to ${options.network} instead of the recorded networks`,
    });
  }
  for (const [port, host] of Object.entries((options.ports ?? {}) as Record<string, string>)) {
    steps.push({
      action: 'remap',
      what: `port ${port}`,
      detail: host === '' ? 'not published' : `published on host port ${host}`,
    });
  }
  if (ranAtBackup(input)) {
    steps.push({ action: 'start', what: `container ${name}`, detail: 'it ran at backup time' });
  }
  return { steps };
}

export const docker = {
  name: 'docker',
  noun: 'Docker container',
  example: 'docker:web',
  checkName(name: string): void {
    if (!isValidDockerName(name)) {
      throw new ValidationError(
        `"${name}" is not a valid Docker container name (letters, digits and _ . -, starting with a letter or digit)`,
      );
    }
  },
  listed: true,
  selector,
  snapshots: false,
  backupOptions: containerBackupOptions,
  restoreOptions,
  engine: DOCKER_ENGINE,
  cli: { backup: containerBackupFlags, restore: restoreFlags },
  planRestore: planContainerRestore,
} as const satisfies PlatformSpec<'docker'>;
