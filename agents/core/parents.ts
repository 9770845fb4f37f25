/**
 * Which point of a target this agent made last: the parent a tree backup merges against
 * (restic's parent snapshot). Kept on the agent's host, not in the store, on purpose: the
 * parent's inode numbers and ctimes mean something only on the host that read them, so a point
 * another agent made would match nothing. A parent that is gone (pruned, or the store was
 * replaced) is simply not used: the backup reads every file, as a first backup does.
 *
 * One small file per target (named by the SHA-256 of the target), replaced by a rename, so a
 * crash leaves the old or the new one, never half of either.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, promises as fs } from 'node:fs';
import { join } from 'node:path';

export interface ParentRegistry {
  /** The last point committed of `target` by this agent, if any. */
  get(target: string): Promise<string | undefined>;
  set(target: string, recoveryPointId: string): Promise<void>;
}

export class DirParentRegistry implements ParentRegistry {
  private constructor(private readonly dir: string) {}

  static open(dir: string): DirParentRegistry {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return new DirParentRegistry(dir);
  }

  private file(target: string): string {
    return join(this.dir, `${createHash('sha256').update(target).digest('hex')}.json`);
  }

  async get(target: string): Promise<string | undefined> {
    try {
      const record = JSON.parse(await fs.readFile(this.file(target), 'utf8')) as {
        target?: unknown;
        recoveryPointId?: unknown;
      };
      return record.target === target && typeof record.recoveryPointId === 'string'
        ? record.recoveryPointId
        : undefined;
    } catch {
      return undefined;
    }
  }

  async set(target: string, recoveryPointId: string): Promise<void> {
    const file = this.file(target);
    const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    await fs.writeFile(temp, JSON.stringify({ target, recoveryPointId }), { mode: 0o600 });
    await fs.rename(temp, file);
  }
}

/** In memory, for tests and agents without a data directory. */
export class MemoryParentRegistry implements ParentRegistry {
  private readonly points = new Map<string, string>();
  get(target: string): Promise<string | undefined> {
    return Promise.resolve(this.points.get(target));
  }
  set(target: string, recoveryPointId: string): Promise<void> {
    this.points.set(target, recoveryPointId);
    return Promise.resolve();
  }
}
