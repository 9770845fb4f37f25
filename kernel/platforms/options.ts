/**
 * Option schemas and flags that several platforms share (each platform's file lists the ones it
 * takes). A field means the same wherever it appears; `contracts.ts` gives its type on the wire.
 */
import { z } from 'zod';
import type { CliFlag } from './spec';

/** How a backup treats the running workload (BackupRequestOptions.consistency). */
export const consistency = z.enum(['live', 'pause', 'stop']);

export const consistencyFlag: CliFlag = {
  flags: '--consistency <mode>',
  help: 'live: while it runs; pause: frozen; stop: stopped, then started again',
  choices: ['live', 'pause', 'stop'],
  toBody: (value) => (value ? { consistency: value } : {}),
};

/** Docker's rule for container, volume and network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. */
export function isValidDockerName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name);
}

/** A name Docker accepts for a container, volume or network. */
export const dockerName = z.string().refine(isValidDockerName, 'not a valid Docker name');

/** `a=b` flag values, collected from a repeated flag. */
export const collected = (value: unknown): string[] => (Array.isArray(value) ? value : []);

/** The power state a restored workload ends in (LXD instances, vSphere VMs). */
export const stateOption = z.enum(['running', 'stopped']);

export const stateFlag: CliFlag = {
  flags: '--state <state>',
  help: 'LXD, vSphere: power state after the restore (LXD default: as at backup; vSphere: stopped)',
  choices: ['running', 'stopped'],
  toBody: (value) => (value ? { state: value } : {}),
};
/** Tree streams: read every file, not only those changed since the previous point. */
export const fullRead = z.boolean();

export const fullReadFlag: CliFlag = {
  flags: '--full-read',
  help: 'read every file again, not only those changed since the last point',
  toBody: (value) => (value ? { fullRead: true } : {}),
};

/**
 * File-level restore from tree streams (agents/core/tree): `files` are paths in the tree
 * (`STREAM/PATH` when the point has several tree streams), written with their metadata below
 * `dest`, a directory on the agent's host (or into a Docker volume: `intoVolume`).
 */
export const treeRestoreShape = {
  files: z
    .array(
      z
        .string()
        .min(1)
        .refine(
          (p) => !p.startsWith('/') && !p.split('/').some((s) => s === '..' || s === '.'),
          'a file is a path inside the point, without a leading / or . and .. segments',
        ),
    )
    .min(1)
    .optional(),
  dest: z
    .string()
    .refine((p) => p.startsWith('/') && !p.split('/').includes('..'), 'dest is an absolute path')
    .optional(),
};

export const treeRestoreFlags: readonly CliFlag[] = [
  {
    flags: '--file <path>',
    help: 'restore only this file or directory of the point (repeatable)',
    repeatable: true,
    toBody: (v) => (collected(v).length ? { files: collected(v) } : {}),
  },
  {
    flags: '--dest <dir>',
    help: "with --file: the directory on the agent's host to write them into",
    toBody: (v) => (v ? { dest: v } : {}),
  },
];
