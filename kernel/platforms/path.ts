/**
 * `path:/ABSOLUTE/PATH`: a file, block device or directory on the agent's host
 * (agents/drivers/path). Not listed: any path may be one, so the agent, not the API, finds out
 * whether it exists or whether a restore's destination is free. No engine: every agent has it.
 */
import { z } from 'zod';
import type { PlatformSpec } from './spec';

export const path = {
  name: 'path',
  noun: 'path',
  example: 'path:/srv/data',
  listed: false,
  snapshots: false,
  backupOptions: z.object({}).strict(),
  restoreOptions: z.object({}).strict(),
  cli: { backup: [], restore: [] },
} as const satisfies PlatformSpec<'path'>;
