/**
 * `path:/ABSOLUTE/PATH`: a file, block device or directory on the agent's host
 * (agents/drivers/path). Not listed: any path may be one, so the agent, not the API, finds out
 * whether it exists or whether a restore's destination is free. No engine: every agent has it.
 */
import { z } from 'zod';
import { ValidationError } from '../errors';
import { planBytes, type PlanInput, type PlatformPlan } from './restore-plan';
import { fullRead, fullReadFlag, treeRestoreFlags, treeRestoreShape } from './options';
import type { PlatformSpec } from './spec';

/**
 * A path restore (agents/drivers/path): the file, device or tree written at the destination; in
 * place only back to the recorded real path. Paths are not listed, so whether the destination
 * exists is the agent's to find out: under a new name an existing one is refused then.
 */
function planPathRestore(input: PlanInput): PlatformPlan {
  const type = String(input.point.summary.type ?? 'path');
  const size = planBytes(Number(input.point.summary.size ?? 0));
  const what = `${type} ${input.name}`;
  return input.inPlace
    ? { steps: [{ action: 'replace', what, detail: `with the point's ${size}` }] }
    : {
        steps: [{ action: 'create', what, detail: `${size} from ${input.sourceName}` }],
        notes: [`refused by the agent if ${input.name} exists (use --in-place to replace it)`],
      };
}

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
  backupOptions: z.object({ fullRead: fullRead.optional() }).strict(),
  restoreOptions: z.object(treeRestoreShape).strict(),
  cli: { backup: [fullReadFlag], restore: treeRestoreFlags },
  planRestore: planPathRestore,
} as const satisfies PlatformSpec<'path'>;
