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
