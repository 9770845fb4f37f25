/**
 * A directory as one tar stream, built while walking it: no temporary file, and memory bounded
 * by one read buffer plus the pipe's high-water marks, whatever the size of the tree.
 *
 * The archive (POSIX ustar, PAX where ustar cannot say it):
 * - names are relative to the directory (`a`, `a/b/`, directories with a trailing slash), in
 *   sorted byte order, a directory before its contents; the directory itself is not an entry
 *   (its mode, owner and mtime are in the recovery point's metadata);
 * - regular files with their bytes, directories, symlinks (the target as written, never
 *   followed), and hard links: the first path of an inode carries the bytes, later ones are
 *   `link` entries naming it;
 * - mode bits with setuid/setgid/sticky, numeric uid/gid, mtime in seconds;
 * - PAX records (tar-stream writes them) for names or link targets that are not ASCII or too
 *   long for ustar, and (added here) for sizes over 8 GiB, ids over 2097151 and mtimes outside
 *   what ustar's fields hold;
 * - sockets, FIFOs and device nodes are left out with a warning: they are not data, and
 *   re-creating device nodes from a backup is a privilege a restore should not assume.
 *
 * A live tree changes while it is read. Each file's header carries the size seen when it was
 * opened and exactly that many bytes follow: a file that grew is cut at that size, one that
 * shrank is padded with zeros, and either way the archive stays well-formed and the metadata
 * records a warning. Entries that vanish between listing and reading are left out, also with a
 * warning. The result is crash-consistent per file, not a snapshot of the whole tree.
 */
import { constants, promises as fs, type Stats } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { isStowageError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { BackupSink, DriverContext } from '../../core/driver';
import { checkAborted, consumeStream, errnoOf, translate, Warnings } from './common';

type Pack = ReturnType<typeof tar.pack>;
type EntrySink = ReturnType<Pack['entry']>;
type Header = Parameters<Pack['entry']>[0] & { pax?: Record<string, string> };

/** Bytes read from a file per step: big enough for throughput, small enough to bound memory. */
const READ_CHUNK = 1024 * 1024;
/** The ustar size field: 11 octal digits, so 8 GiB - 1. tar-stream falls back to base-256. */
const USTAR_MAX_SIZE = 0o77777777777;
/** The ustar uid/gid fields: 7 octal digits. tar-stream writes 7777777 for anything larger. */
const USTAR_MAX_ID = 0o7777777;
/** tar-stream encodes mtime through a 32-bit integer: outside 1970..2038, say it in PAX. */
const USTAR_MAX_MTIME = 2 ** 31 - 1;

export interface TreeResult {
  entries: number;
  skipped: number;
  /** Sum of the regular files' sizes as archived. */
  size: number;
}

interface WalkState extends TreeResult {
  pack: Pack;
  ctx: DriverContext;
  what: string;
  warnings: Warnings;
  /** `dev:ino` of every multiply-linked file archived so far → its tar name. */
  links: Map<string, string>;
}

function kindOf(st: Stats): string {
  if (st.isSocket()) return 'socket';
  if (st.isFIFO()) return 'FIFO';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'special file';
}

function headerFor(name: string, type: Header['type'], st: Stats, size = 0): Header {
  const header: Header = {
    name,
    type,
    // The whole st_mode: tar-stream replaces a zero mode with a default, and keeps only 07777.
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size,
    mtime: st.mtime,
  };
  const pax: Record<string, string> = {};
  if (size > USTAR_MAX_SIZE) pax.size = String(size);
  if (st.uid > USTAR_MAX_ID) pax.uid = String(st.uid);
  if (st.gid > USTAR_MAX_ID) pax.gid = String(st.gid);
  const seconds = Math.floor(st.mtimeMs / 1000);
  if (seconds < 0 || seconds > USTAR_MAX_MTIME) {
    pax.mtime = String(seconds);
    header.mtime = new Date(seconds < 0 ? 0 : USTAR_MAX_MTIME * 1000);
  }
  if (Object.keys(pax).length > 0) header.pax = pax;
  return header;
}

function skip(state: WalkState, name: string, reason: string): void {
  state.skipped++;
  state.warnings.add(`${name}: skipped (${reason})`);
  state.ctx.log.warn(LogEvent.driverStep, { step: 'entry skipped', entry: name, reason });
}

/** Waits for the entry to take more bytes; rejects if the archive is torn down meanwhile. */
async function write(sink: EntrySink, chunk: Buffer): Promise<void> {
  if (sink.destroying || sink.destroyed) throw new Error('the tar stream was closed');
  if (sink.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      sink.off('drain', onDrain);
      sink.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new Error('the tar stream was closed'));
    };
    sink.on('drain', onDrain);
    sink.on('close', onClose);
  });
}

/** Adds one entry; `body` writes its bytes (files only). Resolves once the entry is complete. */
async function addEntry(
  state: WalkState,
  header: Header,
  body?: (sink: EntrySink) => Promise<void>,
): Promise<void> {
  let settle!: { resolve: () => void; reject: (err: Error) => void };
  const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  // A torn-down archive fails the entry both ways; whichever is awaited reports it.
  done.catch(() => undefined);
  const sink = state.pack.entry(header, (err?: Error | null) =>
    err ? settle.reject(err) : settle.resolve(),
  );
  sink.on('error', () => undefined);
  if (body) {
    await body(sink);
    sink.end(undefined);
  }
  await done;
  state.entries++;
}

async function addFile(state: WalkState, name: string, abs: string): Promise<void> {
  let handle: fs.FileHandle;
  try {
    // O_NOFOLLOW/O_NONBLOCK: whatever replaced the file since it was listed is neither followed
    // nor allowed to block the walk (a FIFO opened for reading waits for a writer).
    handle = await fs.open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') return skip(state, name, 'vanished while the backup ran');
    if (code === 'ELOOP') return skip(state, name, 'became a symlink while the backup ran');
    throw translate(err, `reading ${abs}`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) return skip(state, name, `became a ${kindOf(st)} while the backup ran`);
    const key = `${st.dev}:${st.ino}`;
    const first = st.nlink > 1 ? state.links.get(key) : undefined;
    if (first !== undefined) {
      await addEntry(state, { ...headerFor(name, 'link', st), linkname: first });
      return;
    }
    const size = st.size;
    await addEntry(state, headerFor(name, 'file', st, size), async (sink) => {
      let position = 0;
      while (position < size) {
        checkAborted(state.ctx, state.what);
        const want = Math.min(READ_CHUNK, size - position);
        // A fresh buffer per read: the archive holds on to it until the sink has taken it.
        const buffer = Buffer.allocUnsafe(want);
        const { bytesRead } = await handle.read(buffer, 0, want, position);
        if (bytesRead === 0) break;
        await write(sink, buffer.subarray(0, bytesRead));
        position += bytesRead;
      }
      if (position < size) {
        state.warnings.add(
          `${name}: shrank from ${size} to ${position} bytes while being read; padded with zeros to ${size}`,
        );
        for (let left = size - position; left > 0; left -= READ_CHUNK) {
          await write(sink, Buffer.alloc(Math.min(READ_CHUNK, left)));
        }
        return;
      }
      const after = await handle.stat();
      if (after.size !== size || after.mtimeMs !== st.mtimeMs) {
        state.warnings.add(
          `${name}: changed while being read (${size} bytes when opened, ${after.size} after); ` +
            `archived its first ${size} bytes, which may mix old and new contents`,
        );
      }
    });
    state.size += size;
    if (st.nlink > 1) state.links.set(key, name);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

async function walk(state: WalkState, dirAbs: string, dirRel: string): Promise<void> {
  let names: Buffer[];
  try {
    names = await fs.readdir(dirAbs, { encoding: 'buffer' });
  } catch (err) {
    if (dirRel && (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR')) {
      state.warnings.add(`${dirRel}/: vanished while the backup ran; archived empty`);
      return;
    }
    throw translate(err, `listing ${dirAbs}`);
  }
  // Byte order of the UTF-8 names: stable across runs and locales, so manifests compare.
  names.sort(Buffer.compare);
  for (const raw of names) {
    checkAborted(state.ctx, state.what);
    const base = raw.toString('utf8');
    const name = dirRel ? `${dirRel}/${base}` : base;
    if (!Buffer.from(base, 'utf8').equals(raw)) {
      skip(state, name, 'its name is not valid UTF-8');
      continue;
    }
    const abs = join(dirAbs, base);
    let st: Stats;
    try {
      st = await fs.lstat(abs);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        skip(state, name, 'vanished while the backup ran');
        continue;
      }
      throw translate(err, `reading ${abs}`);
    }
    if (st.isDirectory()) {
      await addEntry(state, headerFor(`${name}/`, 'directory', st));
      await walk(state, abs, name);
    } else if (st.isSymbolicLink()) {
      let target: string;
      try {
        target = await fs.readlink(abs);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'EINVAL') {
          skip(state, name, 'changed while the backup ran');
          continue;
        }
        throw translate(err, `reading the symlink ${abs}`);
      }
      await addEntry(state, { ...headerFor(name, 'symlink', st), linkname: target });
    } else if (st.isFile()) {
      await addFile(state, name, abs);
    } else {
      skip(state, name, kindOf(st));
    }
  }
}

/**
 * Writes the directory at `root` to `sink` as the `tree` stream (kind `tar`). Stops, and tears
 * the archive down, when the job is abandoned or the sink gives up.
 */
export async function backupTree(
  root: string,
  sink: BackupSink,
  ctx: DriverContext,
  warnings: Warnings,
): Promise<TreeResult> {
  const what = `backup of ${root}`;
  const pack = tar.pack();
  const state: WalkState = {
    pack,
    ctx,
    what,
    warnings,
    links: new Map(),
    entries: 0,
    skipped: 0,
    size: 0,
  };
  // The sink reads a plain Node stream; tearing it down returns (and so destroys) the pack.
  const out = Readable.from(pack, { objectMode: false });
  let failure: { err: unknown } | undefined;
  const producing = walk(state, root, '').then(
    () => pack.finalize(),
    (err: unknown) => {
      failure = { err };
      pack.destroy(err instanceof Error ? err : new Error(String(err)));
    },
  );
  try {
    await consumeStream(out, ctx, what, (s) => sink.writeStream({ name: 'tree', kind: 'tar' }, s));
  } catch (err) {
    await producing;
    // The walk's own failure (a permission error, the abandonment) says more than what the
    // sink made of the torn-down stream.
    if (failure && isStowageError(failure.err)) throw failure.err;
    throw err;
  }
  await producing;
  if (failure) throw failure.err;
  return { entries: state.entries, skipped: state.skipped, size: state.size };
}
