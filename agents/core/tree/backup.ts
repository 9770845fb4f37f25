/**
 * Backs up a directory of this host as a tree stream (format.ts): walks it in walk order, and
 * for each regular file either takes its chunks from the previous point of the same target (its
 * size, mtime, ctime and inode are those the previous point's index recorded, and every one of
 * those chunks is still stored) or reads it. Memory: one walk path, one read buffer (the data
 * path's ring) and the hard-link map (files with more than one link only); the index is spooled
 * to a temporary file and stored after the data stream, because one writer stores one stream at
 * a time.
 *
 * A live tree changes while it is read: each file is read up to the size seen when it was opened
 * (a file that shrank is padded with zeros), and the index records that size; either way the
 * point is well-formed and a warning says which file. Entries that vanish between listing and
 * reading are left out with a warning, as are sockets and names that are not UTF-8.
 */
import { constants, promises as fs, type BigIntStats } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DriverError, StowageError, isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { ByteReader, DriverContext } from '../driver';
import { checkAborted } from '../driver-streams';
import type { ChunkRef } from '../../repo/types';
import { compareTreePaths, type TreeEntry, type TreeEntryType } from './format';

/** What the point's writer offers the walk. */
export interface TreeChunkSink {
  /** Stores one file's bytes as whole chunks (a chunk never spans two files). */
  file(read: ByteReader): Promise<ChunkRef[]>;
  /** Whether every chunk is stored, or being stored by this writer (never a condemned one). */
  has(chunks: readonly ChunkRef[]): boolean;
}

/** The previous point's view of the same tree: its index, in walk order, and its chunk list. */
export interface ParentTree {
  entries: AsyncIterable<TreeEntry>;
  chunks: readonly ChunkRef[];
}

export interface TreeWalkResult {
  /** The data stream's chunks, in order, and its size. */
  chunks: ChunkRef[];
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

class Walk {
  readonly chunks: ChunkRef[] = [];
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
  private spool = '';
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

  private async emit(entry: TreeEntry): Promise<void> {
    this.spool += `${JSON.stringify(entry)}\n`;
    this.entries++;
    if (this.spool.length >= SPOOL_BATCH) await this.flushSpool();
  }

  async flushSpool(): Promise<void> {
    if (!this.spool) return;
    const text = this.spool;
    this.spool = '';
    await this.out.write(text);
  }

  async run(): Promise<void> {
    let st: BigIntStats;
    try {
      st = await fs.stat(this.root, { bigint: true });
    } catch (err) {
      throw fsError(err, `reading ${this.root}`);
    }
    if (!st.isDirectory()) throw new DriverError(`${this.root} is not a directory`);
    await this.emit(entryOf('', 'dir', st));
    await this.dir(this.root, '');
    await this.flushSpool();
  }

  private async dir(abs: string, rel: string): Promise<void> {
    let names: Buffer[];
    try {
      names = await fs.readdir(abs, { encoding: 'buffer' });
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
      const base = raw.toString('utf8');
      const path = rel ? `${rel}/${base}` : base;
      if (!Buffer.from(base, 'utf8').equals(raw)) {
        this.skip(path, 'its name is not valid UTF-8');
        continue;
      }
      const child = join(abs, base);
      let st: BigIntStats;
      try {
        st = await fs.lstat(child, { bigint: true });
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') {
          this.skip(path, 'vanished while the backup ran');
          continue;
        }
        throw fsError(err, `reading ${child}`);
      }
      const type = typeOf(st);
      if (type === 'dir') {
        await this.emit(entryOf(path, 'dir', st));
        await this.dir(child, path);
      } else if (type === 'file') {
        await this.file(child, path);
      } else if (type === 'symlink') {
        let target: string;
        try {
          target = await fs.readlink(child);
        } catch (err) {
          if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'EINVAL') {
            this.skip(path, 'changed while the backup ran');
            continue;
          }
          throw fsError(err, `reading the symlink ${child}`);
        }
        await this.emit({ ...entryOf(path, 'symlink', st), link: target });
      } else if (type === 'fifo' || type === 'char' || type === 'block') {
        await this.emit({ ...entryOf(path, type, st), rdev: Number(st.rdev) });
      } else {
        this.skip(path, 'a socket is not data');
      }
    }
  }

  private async file(abs: string, path: string): Promise<void> {
    let handle: fs.FileHandle;
    try {
      // O_NOFOLLOW/O_NONBLOCK: whatever replaced the file since it was listed is neither
      // followed nor allowed to block the walk.
      handle = await fs.open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return this.skip(path, 'vanished while the backup ran');
      if (errnoOf(err) === 'ELOOP') return this.skip(path, 'became a symlink while the backup ran');
      throw fsError(err, `reading ${abs}`);
    }
    try {
      const st = await handle.stat({ bigint: true });
      if (!st.isFile()) return this.skip(path, 'changed type while the backup ran');
      const entry = entryOf(path, 'file', st);
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
        const refs = (await this.reusable(entry)) ?? (await this.read(handle, path, size, st));
        entry.chunks = [this.chunks.length, refs.length];
        entry.offset = this.size;
        for (const ref of refs) this.chunks.push(ref);
        this.size += size;
      }
      await this.emit(entry);
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  /** The previous point's chunks of this file, if it is unchanged and they are all stored. */
  private async reusable(entry: TreeEntry): Promise<ChunkRef[] | undefined> {
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
    const [first, count] = before.chunks;
    const refs = this.parent.chunks.slice(first, first + count);
    const length = refs.reduce((n, c) => n + c.length, 0);
    if (refs.length !== count || length !== entry.size || !this.sink.has(refs)) return undefined;
    this.filesReused++;
    this.bytesReused += length;
    return refs;
  }

  private async read(
    handle: fs.FileHandle,
    path: string,
    size: number,
    st: BigIntStats,
  ): Promise<ChunkRef[]> {
    let position = 0;
    let shrank = false;
    const read: ByteReader = async (into) => {
      checkAborted(this.ctx, this.what);
      const want = Math.min(into.length, size - position);
      if (want <= 0) return 0;
      let n = 0;
      if (!shrank) {
        try {
          ({ bytesRead: n } = await handle.read(into, 0, want, position));
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
    const refs = await this.sink.file(read);
    this.filesRead++;
    if (shrank) {
      this.warn(`${path}: shrank while being read; padded with zeros to ${size} bytes`);
    } else {
      const after = await handle.stat({ bigint: true });
      if (after.size !== st.size || after.mtimeNs !== st.mtimeNs) {
        this.warn(
          `${path}: changed while being read; stored its first ${size} bytes, which may mix old and new contents`,
        );
      }
    }
    return refs;
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
    chunks: walk.chunks,
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
