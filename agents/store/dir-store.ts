/**
 * ObjectStore on a local directory: a NAS mount or a local disk, and the benchmark's target.
 *
 * A key is a '/'-separated path relative to the root. Keys that could leave the root or name
 * something odd (`..`, `.`, empty segments, a leading '/', '\', NUL) are refused with InvalidKey.
 *
 * `put` is atomic and only creates: it writes `<dir>/.stowage-tmp-<random>` in the object's own
 * directory (so the link stays on one filesystem), fsyncs it, hard-links it to the key's name
 * (link(2) fails with EEXIST instead of replacing: ObjectExists, the stored object untouched),
 * removes the temp name and fsyncs the directory. Readers see no object or the whole one; a
 * failing body leaves nothing behind; of two racing puts exactly one links. A filesystem without
 * hard links (some SMB and FAT mounts) gets an existence check and a rename instead, which only
 * a put racing on the same key can slip past. A crash mid-put can leave a temp file: list, get and
 * exists never show one, and no key may look like one. Such leftovers are not swept (a concurrent
 * put's temp file looks the same).
 *
 * Files are created 0600 and directories 0700: a repository holds backup data. Directories a
 * delete empties are removed, up to but not including the root.
 *
 * Unlike S3, one key cannot be both an object and a "directory" of deeper keys (`a/b` and
 * `a/b/c`): the second put fails with the filesystem's error. The object layout never does this.
 */
import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import {
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { SequentialWriter } from '../core/direct-io';
import { Readable } from 'node:stream';
import {
  ObjectExists,
  ObjectNotFound,
  RangeNotSatisfiable,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
  rangeFits,
} from './store';

/** A key or prefix the directory store will not turn into a path; nothing was touched. */
export class InvalidKey extends Error {
  override readonly name = 'InvalidKey';
  constructor(
    readonly key: string,
    reason: string,
  ) {
    super(`${JSON.stringify(key)} is not a valid object key: ${reason}`);
  }
}

const TEMP_PREFIX = '.stowage-tmp-';
/** Bodies of at least this size (packs) are written with O_DIRECT; smaller ones (indexes) are not. */
const DIRECT_BYTES = 1024 * 1024;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

type Entry = { kind: 'file'; key: string; path: string } | { kind: 'dir'; path: string };

export class DirStore implements ObjectStore {
  private readonly root: string;

  /** `root` need not exist yet: the first put makes it (and missing parents) 0700. */
  constructor(root: string) {
    this.root = resolve(root);
  }

  async put(key: string, body: Readable | Buffer): Promise<void> {
    const file = this.pathOf(key);
    const dir = dirname(file);
    const temp = join(dir, TEMP_PREFIX + randomBytes(8).toString('hex'));
    let handle: FileHandle | undefined;
    try {
      let created: string | undefined;
      ({ handle, created } = await createFile(dir, temp));
      if (Buffer.isBuffer(body) && body.length >= DIRECT_BYTES) {
        await writeAround(handle, body);
      } else {
        // Consumes a stream with backpressure; a body that errors rejects here.
        await writeFile(handle, body);
      }
      await handle.sync();
      await handle.close();
      handle = undefined;
      await createOnly(temp, file, key);
      await syncDir(dir);
      // Directories made for this object are only durable once their parents' entries are.
      for (let up = dir; created !== undefined && up !== dirname(created);) {
        up = dirname(up);
        await syncDir(up);
      }
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await rm(temp, { force: true });
      // A body left half read would stall whoever writes into it.
      if (!Buffer.isBuffer(body)) body.destroy();
      throw err;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const file = this.pathOf(key);
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (err) {
      if (isMissing(err)) throw new ObjectNotFound(key);
      throw err;
    }
    // Checked on the open file: a concurrent put renames a new file in, this one stays whole.
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new ObjectNotFound(key);
      if (range && !rangeFits(range, info.size)) throw new RangeNotSatisfiable(key, range);
      const start = range?.offset ?? 0;
      const end = range ? range.offset + range.length : info.size;
      if (end === start) {
        await handle.close();
        return Readable.from([], { objectMode: false });
      }
      // `end` is inclusive here; the stream closes the handle when it ends or is destroyed.
      return handle.createReadStream({ start, end: end - 1 });
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async getInto(key: string, range: ByteRange, into: Uint8Array): Promise<void> {
    let handle: FileHandle;
    try {
      handle = await open(this.pathOf(key), 'r');
    } catch (err) {
      if (isMissing(err)) throw new ObjectNotFound(key);
      throw err;
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new ObjectNotFound(key);
      if (!rangeFits(range, info.size)) throw new RangeNotSatisfiable(key, range);
      for (let at = 0; at < range.length;) {
        const { bytesRead } = await handle.read(into, at, range.length - at, range.offset + at);
        if (bytesRead === 0) throw new Error(`${key}: ended after ${at} of ${range.length} bytes`);
        at += bytesRead;
      }
    } finally {
      await handle.close();
    }
  }

  async exists(key: string): Promise<boolean> {
    const file = this.pathOf(key);
    try {
      return (await stat(file)).isFile();
    } catch (err) {
      if (isMissing(err)) return false;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const entry of this.walk(prefix)) {
      if (entry.kind !== 'file') continue;
      try {
        yield { key: entry.key, size: (await stat(entry.path)).size };
      } catch (err) {
        // Deleted since the directory was read.
        if (!isMissing(err)) throw err;
      }
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.pathOf(key);
    try {
      await unlink(file);
    } catch (err) {
      if (isMissing(err) || codeOf(err) === 'EISDIR') return;
      throw err;
    }
    await this.prune(dirname(file));
  }

  async deletePrefix(prefix: string): Promise<void> {
    // The walk yields a directory after its contents, so it is empty when reached unless a temp
    // file or a concurrent put is in it.
    for await (const entry of this.walk(prefix)) {
      if (entry.kind === 'file') await unlink(entry.path).catch(ignoreMissing);
      else await rmdir(entry.path).catch(ignoreNotEmpty);
    }
    await this.prune(this.splitPrefix(prefix).dir);
  }

  /** The file a key names. */
  private pathOf(key: string): string {
    if (key === '') throw new InvalidKey(key, 'it is empty');
    return this.resolve(key, key.split('/'));
  }

  /** A prefix may end mid-name ("data/ab" matches "data/abc"): only up to its last '/' is a path. */
  private splitPrefix(prefix: string): { dir: string; dirKey: string; name: string } {
    const cut = prefix.lastIndexOf('/') + 1;
    const dirKey = prefix.slice(0, cut);
    const dir = this.resolve(prefix, dirKey.split('/').slice(0, -1));
    return { dir, dirKey, name: prefix.slice(cut) };
  }

  /** Joins a key's segments under the root; throws InvalidKey unless it stays inside. */
  private resolve(key: string, segments: string[]): string {
    if (key.includes('\0')) throw new InvalidKey(key, 'it contains NUL');
    if (key.includes('\\')) throw new InvalidKey(key, 'it contains a backslash');
    if (key.startsWith('/')) throw new InvalidKey(key, 'it is absolute');
    for (const segment of segments) {
      if (segment === '' || segment === '.' || segment === '..')
        throw new InvalidKey(key, `it has a "${segment}" segment`);
      if (segment.startsWith(TEMP_PREFIX)) throw new InvalidKey(key, 'it names a temp file');
    }
    const path = join(this.root, ...segments);
    if (path !== this.root && !path.startsWith(this.root + sep))
      throw new InvalidKey(key, 'it leaves the root');
    return path;
  }

  /** Files and directories under a prefix, each directory after its contents, temp files left out. */
  private async *walk(prefix: string): AsyncGenerator<Entry> {
    const { dir, dirKey, name } = this.splitPrefix(prefix);
    yield* walkDir(dir, dirKey, name);
  }

  /** Removes empty directories from `dir` up towards the root (which stays). */
  private async prune(dir: string): Promise<void> {
    while (dir !== this.root && dir.startsWith(this.root + sep)) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty, already gone, or not ours to remove: stop here
      }
      dir = dirname(dir);
    }
  }
}

async function* walkDir(dir: string, keyPrefix: string, namePrefix: string): AsyncGenerator<Entry> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isMissing(err)) return;
    throw err;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    if (!entry.name.startsWith(namePrefix) || entry.name.startsWith(TEMP_PREFIX)) continue;
    const path = join(dir, entry.name);
    const key = keyPrefix + entry.name;
    // Symlinks and other special files are neither: a store never makes them.
    if (entry.isDirectory()) {
      yield* walkDir(path, `${key}/`, '');
      yield { kind: 'dir', path };
    } else if (entry.isFile()) {
      yield { kind: 'file', key, path };
    }
  }
}

/**
 * Opens a new temp file, making its directory (`created`: the topmost directory it made); tries
 * again if a concurrent delete pruned the directory in between.
 */
async function createFile(
  dir: string,
  temp: string,
): Promise<{ handle: FileHandle; created: string | undefined }> {
  let created: string | undefined;
  for (let attempt = 1; ; attempt++) {
    created = (await mkdir(dir, { recursive: true, mode: DIR_MODE })) ?? created;
    try {
      return { handle: await open(temp, 'wx', FILE_MODE), created };
    } catch (err) {
      if (codeOf(err) !== 'ENOENT' || attempt === 3) throw err;
    }
  }
}

/** Errors of link(2) that say the filesystem has no hard links, not that the key is taken. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV', 'EMLINK']);

/**
 * Gives the finished temp file the key's name unless that name exists (ObjectExists). The temp
 * name is gone afterwards either way (the caller's cleanup removes it on failure).
 */
async function createOnly(temp: string, file: string, key: string): Promise<void> {
  try {
    await link(temp, file);
  } catch (err) {
    if (codeOf(err) === 'EEXIST') throw new ObjectExists(key);
    if (!NO_HARD_LINKS.has(codeOf(err) ?? '')) throw err;
    // No hard links here: check, then rename. Only a put of the same key at the same moment
    // can slip between the two; the repository never makes two (keys are random or per point).
    const taken = await lstat(file).then(
      () => true,
      (e: unknown) => (isMissing(e) ? false : Promise.reject(e)),
    );
    if (taken) throw new ObjectExists(key);
    await rename(temp, file);
    return;
  }
  await unlink(temp);
}

/**
 * Writes a large body (a pack) around the page cache (core/direct-io.ts): the object is fsynced
 * next anyway, and a backup's packs would otherwise fill the host's memory with pages nobody reads
 * again soon. Falls back on the page cache by itself where O_DIRECT is refused.
 */
async function writeAround(handle: FileHandle, body: Buffer): Promise<void> {
  const writer = await SequentialWriter.open(handle, { sparse: false });
  try {
    await writer.write(body, 0, false);
    await writer.finish();
  } catch (err) {
    await writer.abandon();
    throw err;
  }
}

/** Makes a rename durable. Some network filesystems cannot fsync a directory: then it is moot. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch (err) {
    if (codeOf(err) !== 'EINVAL' && codeOf(err) !== 'ENOTSUP') throw err;
  } finally {
    await handle.close();
  }
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code;
}

/** ENOTDIR: a path segment is a file, so the key cannot exist either. */
function isMissing(err: unknown): boolean {
  return codeOf(err) === 'ENOENT' || codeOf(err) === 'ENOTDIR';
}

function ignoreMissing(err: unknown): void {
  if (!isMissing(err)) throw err;
}

function ignoreNotEmpty(err: unknown): void {
  if (!isMissing(err) && codeOf(err) !== 'ENOTEMPTY' && codeOf(err) !== 'EEXIST') throw err;
}
