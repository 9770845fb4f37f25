/**
 * `docker:NAME`: a container with its volumes (agents/drivers/docker). The only platform whose
 * targets can be chosen by label (`docker:KEY=VALUE[,KEY=VALUE...][@AGENT]`): only Docker
 * targets carry labels in the inventory, and a Compose project is already one target.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import { collected, consistency, consistencyFlag, dockerName, isValidDockerName } from './options';
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
  })
  .strict()
  .refine((o) => o.intoVolume === undefined || o.volume !== undefined, {
    path: ['intoVolume'],
    message: '"intoVolume" goes with "volume" (the volume of the point to restore)',
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
    help: 'with --volume: the volume to restore into',
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
} as const satisfies PlatformSpec<'docker'>;
