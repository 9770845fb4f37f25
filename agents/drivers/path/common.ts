/**
 * What every part of the path driver shares: the shape of a recovery point's metadata, target
 * name checks, the translation of filesystem errors into Stowage errors, abandonment, and the
 * primitives of an atomic replace (a partial name beside the destination, directory fsync).
 */
import { checkAborted, consumeStream as consumeShared } from '../../core/driver-streams';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants, promises as fs, type Stats } from 'node:fs';
import { dirname, basename, isAbsolute, normalize } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { DriverError, StowageError, TargetNotFound, isStowageError } from '../../../kernel/errors';
import type { DriverContext } from '../../core/driver';

export const METADATA_FORMAT = 'stowage.path/1';

export type PathType = 'file' | 'block-device' | 'directory';

export interface PathBackupMetadata {
  format: typeof METADATA_FORMAT;
  /** The target's name: the absolute path as given. */
  path: string;
  /** Where `path` led when it was a symlink (`/dev/disk/by-id/...` → `/dev/vdb`). */
  resolvedPath?: string;
  type: PathType;
  /**
   * Bytes: the file's or device's length as read; for a directory, the sum of the regular files'
   * sizes in the archive (the tar stream itself is a little larger).
   */
  size: number;
  /** Permission bits of the file, device node or top directory, with setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  /** ISO 8601, millisecond precision. */
  mtime: string;
  /** Directory only: entries in the tar (directories, files, symlinks, hard links). */
  entries?: number;
  /** Directory only: sockets, FIFOs, device nodes and unreadable names left out. */
  skipped?: number;
  /**
   * Directory as a tree stream (agents/core/tree): files read, and files whose chunks came
   * from the previous point unread. Absent for a directory stored as a tar (older points).
   */
  filesRead?: number;
  filesReused?: number;
  /** What went wrong without failing the backup (a file that changed while read...). Capped. */
  warnings?: string[];
}

/** Keeps the manifest small on a tree where thousands of files change during the backup. */
export const MAX_WARNINGS = 100;

/** Collects warnings for the metadata, keeping the first MAX_WARNINGS and counting the rest. */
export class Warnings {
  readonly list: string[] = [];
  private dropped = 0;
  add(text: string): void {
    if (this.list.length < MAX_WARNINGS) this.list.push(text);
    else this.dropped++;
  }
  toMetadata(): string[] | undefined {
    if (this.list.length === 0) return undefined;
    return this.dropped ? [...this.list, `...and ${this.dropped} more`] : [...this.list];
  }
}

export function parseMetadata(raw: Record<string, unknown>): PathBackupMetadata {
  const m = raw as Partial<PathBackupMetadata>;
  const ok =
    m.format === METADATA_FORMAT &&
    typeof m.path === 'string' &&
    (m.type === 'file' || m.type === 'block-device' || m.type === 'directory') &&
    typeof m.size === 'number' &&
    typeof m.mode === 'number' &&
    typeof m.uid === 'number' &&
    typeof m.gid === 'number' &&
    typeof m.mtime === 'string' &&
    !Number.isNaN(Date.parse(m.mtime));
  if (!ok) {
    throw new DriverError(
      `the recovery point's metadata is not a path backup (format ${String(m.format)}, ` +
        `expected ${METADATA_FORMAT}); restore it with the driver of the platform that made it`,
    );
  }
  return m as PathBackupMetadata;
}

/**
 * Checks that `name` is an absolute path without `..` segments and returns it normalised
 * (doubled and trailing slashes removed). `..` is refused rather than resolved: a target names
 * one place, and `/srv/a/../b` makes a reader guess which.
 */
export function checkPathName(name: string, role = 'a path target'): string {
  if (!name || !isAbsolute(name) || name.includes('\0')) {
    throw new DriverError(
      `${role} must be an absolute path (path:/srv/images, path:/dev/vdb), not "${name}"; ` +
        'give the absolute path',
    );
  }
  if (name.split('/').includes('..')) {
    throw new DriverError(
      `${role} must not contain ".." segments ("${name}"); give the absolute path it means`,
    );
  }
  const normal = normalize(name);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** `lstat` that answers undefined for a path that is not there. */
export async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return undefined;
    throw translate(err, `reading ${path}`);
  }
}

/**
 * Turns a filesystem failure into a StowageError whose message says what was being done and how
 * to fix it. StowageErrors (an integrity error from the store, an abandonment) pass unchanged.
 */
export function translate(err: unknown, action: string): StowageError {
  if (isStowageError(err)) return err;
  const code = errnoOf(err);
  const said = err instanceof Error ? err.message : String(err);
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return new DriverError(
        `${action}: permission denied (${said}); run the agent as root or as a user who may read and write it`,
        { cause: err },
      );
    case 'ENOSPC':
    case 'EDQUOT':
      return new DriverError(`${action}: no space left on the device (${said}); free some space`, {
        cause: err,
      });
    case 'EROFS':
      return new DriverError(`${action}: the filesystem is read-only (${said})`, { cause: err });
    case 'EBUSY':
      return new DriverError(
        `${action}: the device or file is busy (${said}); unmount it or stop what uses it first`,
        { cause: err },
      );
    case 'EIO':
      return new DriverError(`${action}: input/output error (${said}); check the disk`, {
        cause: err,
      });
    default:
      return new DriverError(`${action} failed: ${said}`, { cause: err });
  }
}

export function notFound(path: string, cause?: unknown): TargetNotFound {
  return new TargetNotFound(
    `${path} does not exist on this agent's host; give the absolute path of an existing file, ` +
      'block device or directory',
    { cause },
  );
}

export { checkAborted };

/** consumeStream that reports a failed disk read (EIO on a dying device) as the disk's error. */
export function consumeStream<T>(
  stream: Readable,
  ctx: DriverContext,
  what: string,
  consume: (stream: Readable) => Promise<T>,
): Promise<T> {
  return consumeShared(stream, ctx, what, consume, (broke) =>
    errnoOf(broke) ? translate(broke, what) : undefined,
  );
}

/** `<dest>.stowage-<what>-<random>`: beside the destination, so a rename onto it is atomic. */
export function sideName(dest: string, what: 'partial' | 'old'): string {
  return `${dest}.stowage-${what}-${randomBytes(6).toString('hex')}`;
}

/** The destination's directory must exist: a restore creates one thing, not a chain of parents. */
export async function checkParent(dest: string): Promise<void> {
  if (basename(dest) === '')
    throw new DriverError('cannot restore onto /; give another destination path');
  const parent = dirname(dest);
  let st: Stats;
  try {
    st = await fs.stat(parent);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      throw new DriverError(
        `cannot restore to ${dest}: its directory ${parent} does not exist; create it first or choose another destination path`,
        { cause: err },
      );
    }
    throw translate(err, `reading ${parent}`);
  }
  if (!st.isDirectory()) {
    throw new DriverError(`cannot restore to ${dest}: ${parent} is not a directory`);
  }
}

/** Makes a rename or a new name in `dir` durable. Best effort: some filesystems refuse it. */
export async function fsyncDir(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    await handle.sync();
  } catch {
    // Not all filesystems allow fsync on a directory; the rename itself is still atomic.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Flushes the filesystem holding `path` (coreutils `sync -f`, i.e. syncfs). Best effort. */
export async function syncFilesystem(path: string): Promise<void> {
  try {
    await promisify(execFile)('sync', ['-f', path]);
  } catch {
    // An old coreutils without -f: the restored tree is complete, just not yet flushed.
  }
}

/**
 * Writes all of `buffer` at `position` (or the current offset): write(2) may take less than
 * asked, and a short write left unnoticed is a hole in the restored bytes.
 */
export async function writeFully(
  handle: fs.FileHandle,
  buffer: Uint8Array,
  position: number | null = null,
): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const at = position === null ? null : position + done;
    const { bytesWritten } = await handle.write(buffer, done, buffer.length - done, at);
    done += bytesWritten;
  }
}

/** Whether chown is possible: only root may give files away. */
export function canChown(): boolean {
  return process.getuid?.() === 0;
}

/** Removes what a failed restore created; never throws, the original failure matters more. */
export async function removeQuietly(path: string): Promise<void> {
  await fs.rm(path, { recursive: true, force: true }).catch(() => undefined);
}

/**
 * A directory held open: names in it resolve in that very directory whatever happens to the
 * path it was opened by (the `openat(2)` idea, which Node lacks, through the process's own
 * `/proc/<pid>/fd/N` link; `<pid>`, not `self`, so a helper such as `sync -f` resolves it too).
 * Used for every step of a restore after its checks, so a path component swapped for a symlink
 * between the check and the write cannot redirect the write.
 */
export interface Anchor {
  /** The real path the directory had when it was opened and checked. */
  readonly real: string;
  /** `name` (one component or a relative path) inside the held directory. */
  at(name: string): string;
  close(): Promise<void>;
}

/**
 * Opens the directory `real` (which must be a real path: no symlink in it) and checks that what
 * was opened is what `real` names now; `check` may refuse it from its stat (an owner, a mode).
 */
export async function anchorDirectory(
  real: string,
  check?: (st: Stats) => string | undefined,
): Promise<Anchor> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(real, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    if (errnoOf(err) === 'ELOOP' || errnoOf(err) === 'ENOTDIR') {
      throw new DriverError(
        `${real} is no longer a directory (it was replaced by a symlink or a file while the restore ran); nothing was written there`,
        { cause: err },
      );
    }
    throw translate(err, `opening ${real}`);
  }
  const via = `/proc/${process.pid}/fd/${handle.fd}`;
  try {
    const actual = await fs.readlink(via);
    if (actual !== real) {
      throw new DriverError(
        `${real} changed while the restore opened it (a component of its path now leads to ${actual}); nothing was written there`,
      );
    }
    const refused = check?.(await handle.stat());
    if (refused) throw new DriverError(`${real}: ${refused}; nothing was written there`);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw isStowageError(err) ? err : translate(err, `checking ${real}`);
  }
  return {
    real,
    // `N/.` is the directory itself: an lchown of `N` would act on the link in /proc.
    at: (name) => (name === '' ? `${via}/.` : `${via}/${name}`),
    close: () => handle.close().catch(() => undefined),
  };
}

/** `child` is `root` or lies below it (both absolute, normalised, real). */
export function isInside(child: string, root: string): boolean {
  return root === '/' || child === root || child.startsWith(`${root}/`);
}
