/**
 * Backs up a directory of this host as a tree stream (format.ts): walks it in walk order, and
 * for each regular file either takes its chunks from the previous point of the same target (its
 * size, mtime, ctime and inode, from one lstat, are those the previous point's index recorded,
 * and every one of those chunks is still stored: the file is not even opened) or reads it.
 * Files are handed to the writer one after the other without waiting for their chunks to be
 * stored (repo/repository.ts treeData), and small ones share chunks. Memory: one walk path, the
 * data path's ring, the files waiting for a shared chunk (at most one chunk's, 1,024) and the
 * hard-link map (files with more than one link only); the index is spooled to a temporary file
 * and stored after the data stream, because one writer stores one stream at a time.
 *
 * A live tree changes while it is read: each file is read up to the size seen when it was opened
 * (a file that shrank is padded with zeros), and the index records that size; either way the
 * point is well-formed and a warning says which file. Entries that vanish between listing and
 * reading are left out with a warning, as are sockets and names that are not UTF-8.
 */
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  read as readCb,
  readdirSync,
  readlinkSync,
  readSync,
  statSync,
  promises as fs,
  type BigIntStats,
} from 'node:fs';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DriverError, StowageError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { ByteReader, DriverContext } from '../driver';
import { checkAborted } from '../driver-streams';
import type { ChunkRef } from '../../repo/types';
import { compareTreePaths, type TreeEntry, type TreeEntryType } from './format';
import { readXattrs } from './xattrs';

/** What the point's writer offers the walk: the data stream's chunk list, built file by file. */
export interface TreeChunkSink {
  /**
   * Adds one file's bytes as whole chunks (a chunk never spans two files); resolves their span
   * `[first, count]` of the data stream's chunk list once they are cut (they are stored later).
   */
  file(read: ByteReader): Promise<[number, number]>;
  /**
   * Adds a file of at most `smallFile` bytes to a chunk shared with the small files around it:
   * that chunk's place and the bytes of it before this file's.
   */
  small(read: ByteReader): Promise<{ chunk: number; skip: number }>;
  readonly smallFile: number;
  /** Adds an unchanged file's chunks, stored before: their span. */
  reuse(chunks: readonly ChunkRef[]): Promise<[number, number]>;
  /** Whether every chunk is stored, or being stored by this writer (never a condemned one). */
  has(chunks: readonly ChunkRef[]): boolean;
}

/** The previous point's view of the same tree: its index, in walk order, and its chunk list. */
export interface ParentTree {
  entries: AsyncIterable<TreeEntry>;
  chunks: readonly ChunkRef[];
}

export interface TreeWalkResult {
  /** The data stream's size (its chunks are the sink's). */
  size: number;
  /** The spooled index (JSON lines); the caller stores it, then calls `discard`. */
  indexFile: string;
  entries: number;
  skipped: number;
  filesRead: number;
  filesReused: number;
  bytesReused: number;
  warnings: string[];
}

/** Keeps the metadata small on a tree where thousands of files change during the backup. */
const MAX_WARNINGS = 100;
/** Index lines are written to the spool file in batches of about this many bytes. */
const SPOOL_BATCH = 256 * 1024;
/**
 * The walk's metadata calls and small files' reads are synchronous system calls (a few µs each
 * on a local file system, where a round trip through libuv's thread pool costs tens, and more on
 * a loaded host); it lets the event loop run (timers, heartbeats, worker results) every this many
 * entries. Large files are read asynchronously, overlapping their chunking.
 */
const YIELD_EVERY = 512;
const readAsync = promisify(readCb);

export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function fsError(err: unknown, action: string): StowageError {
  if (isStowageError(err)) return err;
  const said = err instanceof Error ? err.message : String(err);
  const code = errnoOf(err);
  const hint =
    code === 'EACCES' || code === 'EPERM'
      ? '; run the agent as root (it reads volumes and pools from the host)'
      : '';
  return new DriverError(`${action} failed: ${said}${hint}`, { cause: err });
}

/** The previous point's entries, merged against the walk by path in one pass. */
class ParentCursor {
  private current: TreeEntry | undefined;
  private done = false;
  private readonly it: AsyncIterator<TreeEntry>;

  constructor(
    entries: AsyncIterable<TreeEntry>,
    private readonly onError: (err: unknown) => void,
  ) {
    this.it = entries[Symbol.asyncIterator]();
  }

  async find(path: string): Promise<TreeEntry | undefined> {
    while (!this.done) {
      if (!this.current) {
        let next: IteratorResult<TreeEntry>;
        try {
          next = await this.it.next();
        } catch (err) {
          // A parent that cannot be read (damaged, its packs gone) only costs reading the files.
          this.done = true;
          this.onError(err);
          return undefined;
        }
        if (next.done) {
          this.done = true;
          return undefined;
        }
        this.current = next.value;
      }
      const order = compareTreePaths(this.current.path, path);
      if (order < 0) {
        this.current = undefined;
        continue;
      }
      return order === 0 ? this.current : undefined;
    }
    return undefined;
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

function typeOf(st: BigIntStats): TreeEntryType | undefined {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  return undefined;
}

function entryOf(path: string, type: TreeEntryType, st: BigIntStats): TreeEntry {
  return {
    path,
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtime: st.mtimeNs.toString(),
    ctime: st.ctimeNs.toString(),
    ino: Number(st.ino),
  };
}

/** See Walk.joinGroup. */
interface Group {
  /** The previous point's chunk, and the bytes of it the files so far account for. */
  chunk: number;
  ref: ChunkRef;
  next: number;
  /** In walk order: the group's files (with their path) and the entries between them. */
  held: Array<TreeEntry | { entry: TreeEntry; abs: string }>;
}

class Walk {
  size = 0;
  entries = 0;
  skipped = 0;
  filesRead = 0;
  filesReused = 0;
  bytesReused = 0;
  readonly warnings: string[] = [];
  private droppedWarnings = 0;
  /** `dev:ino` of files with several links → the path that carries their bytes. */
  private readonly links = new Map<string, string>();
  /** Unchanged small files waiting for the rest of the previous point's chunk they share. */
  private group: Group | undefined;
  /**
   * Index lines waiting for the spool file, as bytes: a line's string dies as soon as it is
   * copied here, instead of living in a long string until the next write, long enough for the
   * garbage collector to move it (and a walk's worth of its likes) to the old generation, which
   * it collects far less often (the peak RSS of an incremental of a million files).
   */
  private readonly spool = Buffer.allocUnsafe(SPOOL_BATCH);
  private spooled = 0;
  private sinceYield = 0;
  private readonly what: string;

  constructor(
    private readonly root: string,
    private readonly sink: TreeChunkSink,
    private readonly parent: { cursor: ParentCursor; chunks: readonly ChunkRef[] } | undefined,
    private readonly ctx: DriverContext,
    private readonly out: fs.FileHandle,
  ) {
    this.what = `backup of ${root}`;
  }

  warn(text: string): void {
    if (this.warnings.length < MAX_WARNINGS) this.warnings.push(text);
    else this.droppedWarnings++;
  }

  finalWarnings(): string[] {
    return this.droppedWarnings
      ? [...this.warnings, `...and ${this.droppedWarnings} more`]
      : this.warnings;
  }

  private skip(path: string, reason: string): void {
    this.skipped++;
    this.warn(`${path}: skipped (${reason})`);
    this.ctx.log.warn(LogEvent.driverStep, { step: 'entry skipped', entry: path, reason });
  }

  /** Adds the entry's extended attributes (xattrs.ts); one that cannot be read is warned of. */
  private withXattrs(entry: TreeEntry, abs: string): TreeEntry {
    try {
      const xattrs = readXattrs(abs);
      if (xattrs) entry.xattrs = xattrs;
    } catch (err) {
      this.warn(`${entry.path || '.'}: extended attributes not read (${String(err)})`);
    }
    return entry;
  }

  private async emit(entry: TreeEntry): Promise<void> {
    if (this.group) {
      this.group.held.push(entry);
      return;
    }
    const line = `${JSON.stringify(entry)}\n`;
    this.entries++;
    if (this.spooled + Buffer.byteLength(line) > SPOOL_BATCH) await this.flushSpool();
    if (Buffer.byteLength(line) > SPOOL_BATCH) {
      await this.out.write(line);
      return;
    }
    this.spooled += this.spool.write(line, this.spooled);
  }

  async flushSpool(): Promise<void> {
    if (this.spooled === 0) return;
    const n = this.spooled;
    this.spooled = 0;
    await this.out.write(this.spool, 0, n);
  }

  async run(): Promise<void> {
    let st: BigIntStats;
    try {
      st = statSync(this.root, { bigint: true });
    } catch (err) {
      throw fsError(err, `reading ${this.root}`);
    }
    if (!st.isDirectory()) throw new DriverError(`${this.root} is not a directory`);
    await this.emit(this.withXattrs(entryOf('', 'dir', st), this.root));
    await this.dir(this.root, '');
    await this.breakGroup();
    await this.flushSpool();
  }

  private async dir(abs: string, rel: string): Promise<void> {
    let names: Buffer[];
    try {
      names = readdirSync(abs, { encoding: 'buffer' });
    } catch (err) {
      if (rel && (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR')) {
        this.warn(`${rel}/: vanished while the backup ran; recorded empty`);
        return;
      }
      throw fsError(err, `listing ${abs}`);
    }
    names.sort(Buffer.compare);
    for (const raw of names) {
      checkAborted(this.ctx, this.what);
      if (++this.sinceYield >= YIELD_EVERY) {
        this.sinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
      const base = raw.toString('utf8');
      const path = rel ? `${rel}/${base}` : base;
      if (!Buffer.from(base, 'utf8').equals(raw)) {
        this.skip(path, 'its name is not valid UTF-8');
        continue;
      }
      const child = join(abs, base);
      let st: BigIntStats;
      try {
        st = lstatSync(child, { bigint: true });
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') {
          this.skip(path, 'vanished while the backup ran');
          continue;
        }
        throw fsError(err, `reading ${child}`);
      }
      const type = typeOf(st);
      if (type === 'dir') {
        await this.emit(this.withXattrs(entryOf(path, 'dir', st), child));
        await this.dir(child, path);
      } else if (type === 'file') {
        if (!(await this.unchanged(child, path, st))) await this.file(child, path);
      } else if (type === 'symlink') {
        let target: string;
        try {
          target = readlinkSync(child);
        } catch (err) {
          if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'EINVAL') {
            this.skip(path, 'changed while the backup ran');
            continue;
          }
          throw fsError(err, `reading the symlink ${child}`);
        }
        await this.emit({ ...entryOf(path, 'symlink', st), link: target });
      } else if (type === 'fifo' || type === 'char' || type === 'block') {
        await this.emit({
          ...this.withXattrs(entryOf(path, type, st), child),
          rdev: Number(st.rdev),
        });
      } else {
        this.skip(path, 'a socket is not data');
      }
    }
  }

  /**
   * Records a file whose lstat matches the previous point's entry (and whose chunks are all
   * stored) without opening it: an incremental costs a stat per unchanged file. Hard-linked
   * files go through `file`, which tracks their links.
   */
  private async unchanged(abs: string, path: string, st: BigIntStats): Promise<boolean> {
    if (!this.parent || st.nlink > 1n || st.size === 0n) return false;
    const entry = entryOf(path, 'file', st);
    entry.size = Number(st.size);
    const before = await this.previous(entry);
    if (!before) return false;
    // Setting an xattr changes the ctime: an unchanged file's are the previous point's.
    if (before.xattrs) entry.xattrs = before.xattrs;
    if (before.skip !== undefined || this.parentLength(before) !== entry.size) {
      return this.joinGroup(entry, abs, before);
    }
    const refs = this.reusable(before, entry);
    if (!refs) return false;
    await this.breakGroup();
    entry.chunks = await this.sink.reuse(refs);
    entry.offset = this.size;
    this.size += entry.size;
    await this.emit(entry);
    return true;
  }

  /** The plain length of the chunks the previous point's entry names. */
  private parentLength(before: TreeEntry): number {
    const [first, count] = before.chunks!;
    let n = 0;
    for (let i = first; i < first + count; i++) n += this.parent!.chunks[i]?.length ?? NaN;
    return n;
  }

  /**
   * An unchanged small file that shared a chunk with its neighbours in the previous point: the
   * chunk is taken again only when all the files it holds turn up unchanged, one after the
   * other (then the data stream is still the files' bytes in walk order); until then the file
   * and the entries after it wait in the group. Anything else breaks the group, whose files are
   * then read.
   */
  private async joinGroup(entry: TreeEntry, abs: string, before: TreeEntry): Promise<boolean> {
    const [chunk, count] = before.chunks!;
    const skip = before.skip ?? 0;
    const ref = this.parent!.chunks[chunk];
    if (count !== 1 || !ref || skip + entry.size! > ref.length) return false;
    if (this.group && (this.group.chunk !== chunk || this.group.next !== skip)) {
      await this.breakGroup();
    }
    if (!this.group) {
      if (skip !== 0 || !this.sink.has([ref])) return false;
      this.group = { chunk, ref, next: 0, held: [] };
    }
    const group = this.group;
    group.held.push({ entry, abs });
    group.next += entry.size!;
    if (group.next === ref.length) await this.completeGroup();
    return true;
  }

  /** Every file of the previous point's chunk turned up unchanged: the chunk is theirs again. */
  private async completeGroup(): Promise<void> {
    const group = this.group!;
    this.group = undefined;
    const [chunk] = await this.sink.reuse([group.ref]);
    let skip = 0;
    for (const item of group.held) {
      if (!('abs' in item)) {
        await this.emit(item);
        continue;
      }
      const entry = item.entry;
      entry.chunks = [chunk, 1];
      if (skip > 0) entry.skip = skip;
      entry.offset = this.size;
      this.size += entry.size!;
      skip += entry.size!;
      this.filesReused++;
      this.bytesReused += entry.size!;
      await this.emit(entry);
    }
  }

  /** The group cannot be completed: its files are read, its other entries recorded, in order. */
  private async breakGroup(): Promise<void> {
    const group = this.group;
    if (!group) return;
    this.group = undefined;
    for (const item of group.held) {
      if ('abs' in item) await this.file(item.abs, item.entry.path);
      else await this.emit(item);
    }
  }

  private async file(abs: string, path: string): Promise<void> {
    let fd: number;
    try {
      // O_NOFOLLOW/O_NONBLOCK: whatever replaced the file since it was listed is neither
      // followed nor allowed to block the walk.
      fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return this.skip(path, 'vanished while the backup ran');
      if (errnoOf(err) === 'ELOOP') return this.skip(path, 'became a symlink while the backup ran');
      throw fsError(err, `reading ${abs}`);
    }
    try {
      const st = fstatSync(fd, { bigint: true });
      if (!st.isFile()) return this.skip(path, 'changed type while the backup ran');
      const entry = this.withXattrs(entryOf(path, 'file', st), abs);
      if (st.nlink > 1n) {
        entry.nlink = Number(st.nlink);
        const key = `${st.dev}:${st.ino}`;
        const first = this.links.get(key);
        if (first !== undefined) {
          await this.emit({ ...entry, type: 'hardlink', link: first });
          return;
        }
        this.links.set(key, path);
      }
      const size = Number(st.size);
      entry.size = size;
      if (size > 0) {
        const before = await this.previous(entry);
        const refs = before && before.skip === undefined && this.reusable(before, entry);
        // Bytes go into the data stream now: the files waiting for their old chunk cannot wait.
        await this.breakGroup();
        if (refs) {
          entry.chunks = await this.sink.reuse(refs);
        } else if (size <= this.sink.smallFile) {
          const at = await this.read(fd, path, size, st, true);
          entry.chunks = [at.chunk, 1];
          if (at.skip > 0) entry.skip = at.skip;
        } else {
          entry.chunks = await this.read(fd, path, size, st, false);
        }
        entry.offset = this.size;
        this.size += size;
      }
      await this.emit(entry);
    } finally {
      try {
        closeSync(fd);
      } catch {
        // nothing to do: the file was only read
      }
    }
  }

  /** The previous point's entry of this file, if its metadata is unchanged and it has data. */
  private async previous(entry: TreeEntry): Promise<TreeEntry | undefined> {
    if (!this.parent) return undefined;
    const before = await this.parent.cursor.find(entry.path);
    if (
      !before ||
      before.type !== 'file' ||
      before.size !== entry.size ||
      before.mtime !== entry.mtime ||
      before.ctime !== entry.ctime ||
      before.ino !== entry.ino ||
      !before.chunks
    ) {
      return undefined;
    }
    return before;
  }

  /** The previous point's chunks of a file that had them to itself, if they are all stored. */
  private reusable(before: TreeEntry, entry: TreeEntry): ChunkRef[] | undefined {
    const [first, count] = before.chunks!;
    const refs = this.parent!.chunks.slice(first, first + count);
    const length = refs.reduce((n, c) => n + c.length, 0);
    if (refs.length !== count || length !== entry.size || !this.sink.has(refs)) return undefined;
    this.filesReused++;
    this.bytesReused += length;
    return refs;
  }

  private read(
    fd: number,
    path: string,
    size: number,
    st: BigIntStats,
    small: true,
  ): Promise<{ chunk: number; skip: number }>;
  private read(
    fd: number,
    path: string,
    size: number,
    st: BigIntStats,
    small: false,
  ): Promise<[number, number]>;
  private async read(
    fd: number,
    path: string,
    size: number,
    st: BigIntStats,
    small: boolean,
  ): Promise<[number, number] | { chunk: number; skip: number }> {
    let position = 0;
    let shrank = false;
    const read: ByteReader = async (into) => {
      checkAborted(this.ctx, this.what);
      const want = Math.min(into.length, size - position);
      if (want <= 0) return 0;
      let n = 0;
      if (!shrank) {
        try {
          n = small
            ? readSync(fd, into, 0, want, position)
            : (await readAsync(fd, into, 0, want, position)).bytesRead;
        } catch (err) {
          throw fsError(err, `reading ${path}`);
        }
      }
      if (n === 0) {
        // The file shrank while it was read: pad to the size its entry records.
        shrank = true;
        into.fill(0, 0, want);
        n = want;
      }
      position += n;
      return n;
    };
    const span = small ? await this.sink.small(read) : await this.sink.file(read);
    this.filesRead++;
    if (shrank) {
      this.warn(`${path}: shrank while being read; padded with zeros to ${size} bytes`);
    } else {
      const after = fstatSync(fd, { bigint: true });
      if (after.size !== st.size || after.mtimeNs !== st.mtimeNs) {
        this.warn(
          `${path}: changed while being read; stored its first ${size} bytes, which may mix old and new contents`,
        );
      }
    }
    return span;
  }
}

/**
 * Walks `root` into `sink`. The caller stores `indexFile` as the index stream and then removes
 * it (`discardIndex`), also when storing fails.
 */
export async function walkTree(
  root: string,
  sink: TreeChunkSink,
  parent: ParentTree | undefined,
  ctx: DriverContext,
): Promise<TreeWalkResult> {
  const indexFile = join(tmpdir(), `stowage-tree-${randomBytes(8).toString('hex')}.jsonl`);
  const out = await fs.open(indexFile, 'wx', 0o600);
  const cursor = parent
    ? new ParentCursor(parent.entries, (err) =>
        ctx.log.warn(LogEvent.driverStep, {
          step: 'previous point unreadable: reading every file',
          error: err,
        }),
      )
    : undefined;
  const walk = new Walk(
    root,
    sink,
    cursor && parent ? { cursor, chunks: parent.chunks } : undefined,
    ctx,
    out,
  );
  try {
    await walk.run();
  } catch (err) {
    await out.close().catch(() => undefined);
    await discardIndex(indexFile);
    throw err;
  } finally {
    await cursor?.close().catch(() => undefined);
  }
  await out.close();
  return {
    size: walk.size,
    indexFile,
    entries: walk.entries,
    skipped: walk.skipped,
    filesRead: walk.filesRead,
    filesReused: walk.filesReused,
    bytesReused: walk.bytesReused,
    warnings: walk.finalWarnings(),
  };
}

export async function discardIndex(indexFile: string): Promise<void> {
  await fs.rm(indexFile, { force: true }).catch(() => undefined);
}
