/**
 * Restores a tree stream (format.ts) into a directory of this host: the whole tree into an
 * empty directory (a new Docker volume's mountpoint, a partial directory beside a `path:`
 * destination), or only some of its paths (file-level restore), reading only the chunks those
 * files need.
 *
 * Safety, as for `path:` restores (agents/drivers/path/extract.ts): the index is sealed by the
 * repository's key, and still nothing is created except below a directory this restore created
 * itself (or the root it was given, which must be empty for a whole tree). The index is in walk
 * order, so the directories being filled form one stack: an entry whose parent is not on it is
 * refused, a symlink is never a path component of a later entry, files are opened
 * O_CREAT|O_EXCL|O_NOFOLLOW, and a hard link may only name a file this restore created. A
 * directory gets its mode, owner and times when the walk leaves it, once its contents stopped
 * changing it; memory stays at one stack, whatever the size of the tree.
 *
 * All-zero chunks are never fetched and leave holes in the restored file (a sparse file comes
 * back sparse).
 */
import { execFile } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DriverError, IntegrityError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { ChunkWrite, DriverContext } from '../driver';
import { checkAborted } from '../driver-streams';
import { errnoOf } from './backup';
import { deviceNumbers, isUnder, type TreeEntry } from './format';
import { writeXattrs } from './xattrs';

/** What the point's reader offers the restore. */
export interface TreeSource {
  /** The index, in walk order (read anew on every call). */
  entries(): AsyncIterable<TreeEntry>;
  /**
   * Hands the data stream's bytes to `write` in order, each piece with its offset in the data
   * stream: the whole stream, or only the chunk spans given (`[first, count]`, in order, not
   * overlapping).
   */
  forEachChunk(write: ChunkWrite, spans?: ReadonlyArray<[number, number]>): Promise<void>;
}

export interface TreeRestoreOptions {
  /**
   * Only these paths (relative to the tree's root; a directory brings everything below it),
   * with the directories above them. Undefined: the whole tree, and the root's own mode, owner
   * and times are applied to `root`.
   */
  paths?: readonly string[];
}

export interface TreeRestoreResult {
  entries: number;
  files: number;
  bytes: number;
  skipped: number;
}

interface OpenDir {
  rel: string;
  abs: string;
  entry: TreeEntry | undefined;
  created: boolean;
}

interface OpenFile {
  entry: TreeEntry;
  abs: string;
  handle: fs.FileHandle;
  position: number;
  size: number;
}

function canChown(): boolean {
  return process.getuid?.() === 0;
}

function seconds(ns: string): number {
  return Number(BigInt(ns)) / 1e9;
}

function parentOf(rel: string): string {
  const slash = rel.lastIndexOf('/');
  return slash === -1 ? '' : rel.slice(0, slash);
}

function refuse(path: string, why: string): DriverError {
  return new DriverError(
    `the tree index entry "${path}" ${why}; refusing to restore it. The recovery point is damaged: run a verify on it`,
  );
}

function checkName(path: string): void {
  const parts = path.split('/');
  if (path.includes('\0') || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw refuse(path, 'is not a plain relative path');
  }
}

/**
 * Sets an entry's extended attributes (xattrs.ts) after its owner (chown drops
 * security.capability) and before its mode (an ACL's mask is the mode's group bits); those the
 * destination's file system does not support are reported to `onRefused`. A symlink's are not
 * set (Linux allows no user.* xattrs on one).
 */
function applyXattrs(abs: string, entry: TreeEntry, onRefused: (names: string[]) => void): void {
  if (!entry.xattrs || entry.type === 'symlink') return;
  const refused = writeXattrs(abs, entry.xattrs);
  if (refused.length > 0) onRefused(refused);
}

async function applyAttributes(
  abs: string,
  entry: TreeEntry,
  onRefused: (names: string[]) => void,
  symlink = false,
): Promise<void> {
  const time = seconds(entry.mtime);
  if (canChown()) await fs.lchown(abs, entry.uid, entry.gid);
  applyXattrs(abs, entry, onRefused);
  // chown before chmod: chown clears setuid/setgid. A symlink's mode is not settable on Linux.
  if (!symlink) await fs.chmod(abs, entry.mode);
  await fs.lutimes(abs, time, time);
}

class TreeWriter {
  private readonly stack: OpenDir[];
  private readonly selection: readonly string[] | undefined;
  /** Files this restore created that other paths may link to. */
  private readonly linkable = new Set<string>();
  readonly result: TreeRestoreResult = { entries: 0, files: 0, bytes: 0, skipped: 0 };

  constructor(
    private readonly root: string,
    options: TreeRestoreOptions,
    private readonly ctx: DriverContext,
  ) {
    this.selection = options.paths;
    this.stack = [{ rel: '', abs: root, entry: undefined, created: true }];
  }

  private selected(path: string): boolean {
    return this.selection === undefined || this.selection.some((p) => isUnder(path, p));
  }

  /** Wants `entry`'s data? (a selected regular file with content) */
  wantsData(entry: TreeEntry): boolean {
    return entry.type === 'file' && (entry.size ?? 0) > 0 && this.selected(entry.path);
  }

  /** Closes the directories the walk has left, applying their attributes. */
  private async leaveTo(parent: string): Promise<void> {
    while (this.stack.length > 1 && this.stack[this.stack.length - 1]!.rel !== parent) {
      await this.close(this.stack.pop()!);
    }
  }

  private async close(dir: OpenDir): Promise<void> {
    if (!dir.created || !dir.entry) return;
    try {
      await applyAttributes(dir.abs, dir.entry, this.refused);
    } catch (err) {
      throw fsError(err, `setting the mode, owner and times of ${dir.abs}`);
    }
  }

  /**
   * Takes the next index entry: the directories above it are made (when it is selected), and
   * what it is is created, except a file with data, which is returned open for its bytes.
   */
  async take(entry: TreeEntry): Promise<OpenFile | undefined> {
    checkAborted(this.ctx, `restore into ${this.root}`);
    if (entry.path === '') {
      if (entry.type !== 'dir') throw refuse('', 'is the root but not a directory');
      if (this.selection === undefined) this.stack[0]!.entry = entry;
      return undefined;
    }
    checkName(entry.path);
    const parent = parentOf(entry.path);
    await this.leaveTo(parent);
    const top = this.stack[this.stack.length - 1]!;
    if (top.rel !== parent) throw refuse(entry.path, 'comes before its directory in the index');
    const selected = this.selected(entry.path);
    const abs = join(top.abs, entry.path.slice(parent ? parent.length + 1 : 0));
    if (entry.type === 'dir') {
      const dir: OpenDir = { rel: entry.path, abs, entry, created: false };
      if (selected) {
        await this.makeParents();
        await this.mkdir(abs);
        dir.created = true;
        this.result.entries++;
      }
      this.stack.push(dir);
      return undefined;
    }
    if (!selected) return undefined;
    await this.makeParents();
    try {
      return await this.create(entry, abs);
    } catch (err) {
      throw fsError(err, `restoring ${entry.path}`);
    }
  }

  /** A selected entry below directories that were not selected themselves: make them. */
  private async makeParents(): Promise<void> {
    for (const dir of this.stack) {
      if (dir.created) continue;
      await this.mkdir(dir.abs);
      dir.created = true;
    }
  }

  private async mkdir(abs: string): Promise<void> {
    try {
      await fs.mkdir(abs, { mode: 0o700 });
    } catch (err) {
      throw fsError(err, `creating ${abs}`);
    }
  }

  private async create(entry: TreeEntry, abs: string): Promise<OpenFile | undefined> {
    switch (entry.type) {
      case 'file': {
        const handle = await fs.open(
          abs,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o600,
        );
        this.result.entries++;
        this.result.files++;
        if ((entry.nlink ?? 1) > 1) this.linkable.add(entry.path);
        const file: OpenFile = { entry, abs, handle, position: 0, size: entry.size ?? 0 };
        if (file.size > 0) return file;
        await this.finish(file);
        return undefined;
      }
      case 'hardlink': {
        const target = entry.link ?? '';
        if (!this.linkable.has(target)) {
          if (this.selection !== undefined) {
            // File-level restore of one name of a file whose first name was not asked for.
            this.skip(entry.path, `a hard link to ${target}, which was not restored`);
            return undefined;
          }
          throw refuse(entry.path, `is a hard link to "${target}", not a file restored before it`);
        }
        await fs.link(join(this.root, target), abs);
        this.result.entries++;
        return undefined;
      }
      case 'symlink': {
        if (!entry.link) throw refuse(entry.path, 'is a symlink to nothing');
        // Stored as written, never followed by this restore.
        await fs.symlink(entry.link, abs);
        await applyAttributes(abs, entry, this.refused, true);
        this.result.entries++;
        return undefined;
      }
      case 'fifo':
      case 'char':
      case 'block': {
        if (!canChown()) {
          this.skip(entry.path, `a ${entry.type} node needs root to be made`);
          return undefined;
        }
        const { major, minor } = deviceNumbers(entry.rdev ?? 0);
        const args =
          entry.type === 'fifo'
            ? [abs, 'p']
            : [abs, entry.type === 'char' ? 'c' : 'b', String(major), String(minor)];
        await promisify(execFile)('mknod', ['-m', '0600', ...args]);
        await applyAttributes(abs, entry, this.refused);
        this.result.entries++;
        return undefined;
      }
      default:
        this.skip(entry.path, `an entry of type ${String(entry.type)} is not restored`);
        return undefined;
    }
  }

  /** Xattrs the destination refused (its file system keeps none of that kind): logged once each. */
  private readonly refusedNames = new Set<string>();
  private readonly refused = (names: string[]): void => {
    for (const name of names) {
      if (this.refusedNames.has(name)) continue;
      this.refusedNames.add(name);
      this.ctx.log.warn(LogEvent.driverStep, {
        step: 'extended attribute not restored',
        root: this.root,
        xattr: name,
        reason: 'the destination file system does not support it',
      });
    }
  };

  private skip(path: string, reason: string): void {
    this.result.skipped++;
    this.ctx.log.warn(LogEvent.driverStep, { step: 'entry skipped', entry: path, reason });
  }

  async write(file: OpenFile, bytes: Uint8Array, zero: boolean): Promise<void> {
    // A zero run is left as a hole: the file gets its size when it is finished.
    if (!zero) {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await file.handle.write(
          bytes,
          done,
          bytes.length - done,
          file.position + done,
        );
        done += bytesWritten;
      }
    }
    file.position += bytes.length;
    this.result.bytes += bytes.length;
  }

  async finish(file: OpenFile): Promise<void> {
    try {
      await file.handle.truncate(file.size);
      const time = seconds(file.entry.mtime);
      if (canChown()) await file.handle.chown(file.entry.uid, file.entry.gid);
      applyXattrs(file.abs, file.entry, this.refused);
      await file.handle.chmod(file.entry.mode);
      await file.handle.utimes(time, time);
    } catch (err) {
      throw fsError(err, `setting the mode, owner and times of ${file.entry.path}`);
    } finally {
      await file.handle.close().catch(() => undefined);
    }
  }

  async end(): Promise<void> {
    while (this.stack.length > 0) await this.close(this.stack.pop()!);
  }
}

function fsError(err: unknown, action: string): Error {
  if (isStowageError(err) || !errnoOf(err)) return err as Error;
  const said = err instanceof Error ? err.message : String(err);
  return new DriverError(`${action} failed: ${said}`, { cause: err });
}

/** The chunk spans of the selected files, in order (a first pass over the index). */
async function spansOf(
  source: TreeSource,
  paths: readonly string[],
): Promise<Array<[number, number]>> {
  const spans: Array<[number, number]> = [];
  for await (const entry of source.entries()) {
    if (entry.type !== 'file' || !entry.chunks || !paths.some((p) => isUnder(entry.path, p)))
      continue;
    const [first, count] = entry.chunks;
    const last = spans[spans.length - 1];
    // Small files share chunks: a file may start in the chunk the last span ends with.
    if (last && first <= last[0] + last[1]) {
      last[1] = Math.max(last[1], first + count - last[0]);
    } else {
      spans.push([first, count]);
    }
  }
  return spans;
}

/**
 * Restores the tree (or `options.paths` of it) into `root`, an existing directory: empty for a
 * whole tree (refused otherwise), where the selected paths do not exist yet for a file-level
 * restore. On failure what was created is left for the caller to remove (it made `root`).
 */
export async function restoreTreeInto(
  source: TreeSource,
  root: string,
  ctx: DriverContext,
  options: TreeRestoreOptions = {},
): Promise<TreeRestoreResult> {
  if (options.paths === undefined) {
    const present = await fs.readdir(root).catch((err: unknown) => {
      throw fsError(err, `listing ${root}`);
    });
    if (present.length > 0) {
      throw new DriverError(
        `cannot restore a tree into ${root}: it is not empty (${present.length} entries)`,
      );
    }
  } else {
    for (const p of options.paths) if (p !== '') checkName(p);
  }
  const writer = new TreeWriter(root, options, ctx);
  const spans = options.paths === undefined ? undefined : await spansOf(source, options.paths);
  const index = source.entries()[Symbol.asyncIterator]();
  let current: OpenFile | undefined;
  /** Takes entries until the next file whose bytes come next in the data. */
  const nextDataFile = async (): Promise<OpenFile | undefined> => {
    for (;;) {
      const next = await index.next();
      if (next.done) return undefined;
      const wants = writer.wantsData(next.value);
      const open = await writer.take(next.value);
      if (wants && open) return open;
      if (open) await writer.finish(open);
    }
  };
  const integrity = (why: string) =>
    new IntegrityError(`the tree's data and its index disagree: ${why}; run a verify on the point`);
  try {
    await source.forEachChunk(async (bytes, offset, zero) => {
      let at = 0;
      while (at < bytes.length) {
        current ??= await nextDataFile();
        if (!current) {
          // Picked files: the rest of a chunk that later files share.
          if (spans) return;
          throw integrity('there are bytes after the last file');
        }
        const here = offset + at;
        const want = (current.entry.offset ?? here) + current.position;
        if (here < want && spans) {
          // Picked files: bytes of the files they share a chunk with.
          at += Math.min(want - here, bytes.length - at);
          continue;
        }
        if (here !== want) {
          throw integrity(`${current.entry.path} is at ${want} in its index, ${here} in the data`);
        }
        const n = Math.min(current.size - current.position, bytes.length - at);
        await writer.write(current, bytes.subarray(at, at + n), zero);
        at += n;
        if (current.position === current.size) {
          await writer.finish(current);
          current = undefined;
        }
      }
    }, spans);
    if (current) throw integrity(`${current.entry.path} ends early`);
    // The entries after the last file with data.
    for (;;) {
      const open = await nextDataFile();
      if (!open) break;
      await writer.finish(open);
      throw integrity(`${open.entry.path} has no bytes`);
    }
    await writer.end();
  } finally {
    if (current) await current.handle.close().catch(() => undefined);
    await index.return?.();
  }
  ctx.log.info(LogEvent.driverStep, { step: 'tree restored', root, ...writer.result });
  return writer.result;
}
