/**
 * `path:/ABSOLUTE/PATH`: a file, block device or directory on the agent's host
 * (agents/drivers/path). Not listed: any path may be one, so the agent, not the API, finds out
 * whether it exists or whether a restore's destination is free. No engine: every agent has it.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import type { PlatformSpec } from './spec';

export const path = {
  name: 'path',
  noun: 'path',
  example: 'path:/srv/data',
  /**
   * An absolute path without `.` or `..` segments (the agent refuses them too; here they are
   * refused before a workflow starts): `path:relative/../x` names no one place.
   */
  checkName(name: string): void {
    if (!name.startsWith('/')) {
      throw new ValidationError(
        `path target "${name}" is not an absolute path; write path:/srv/images (from the root of the agent's host)`,
      );
    }
    if (name.split('/').some((part) => part === '..' || part === '.')) {
      throw new ValidationError(
        `path target "${name}" has "." or ".." segments; give the absolute path it means, e.g. path:/srv/images`,
      );
    }
  },
  listed: false,
  snapshots: false,
  backupOptions: z.object({}).strict(),
  restoreOptions: z.object({}).strict(),
  cli: { backup: [], restore: [] },
} as const satisfies PlatformSpec<'path'>;
