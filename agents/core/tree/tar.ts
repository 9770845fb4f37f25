/**
 * Tree streams as a POSIX tar (pax interchange format), for restores that go through an engine's
 * API (a volume the agent cannot see on its host: a remote engine, a volume driver that is not
 * `local`; an LXD pool of another driver, through LXD's import). The archive is what the engine's
 * own export would have been: `<prefix>/` with the root's attributes, then every entry below it,
 * hard links as links to the first path, numeric owners, and a PAX extended header where ustar
 * cannot say it: long or non-ASCII names and link targets, sizes from 8 GiB, large ids, times
 * outside ustar's range, and extended attributes and ACLs as `SCHILY.xattr.<name>` records, which
 * GNU tar (LXD's unpack) and Go's archive/tar (dockerd's) apply. Built while the data is read:
 * memory stays at the pipe's buffers.
 *
 * Written here rather than with tar-stream: its PAX writer takes text only (an xattr value, a
 * file capability, is bytes) and counts a record's length in characters, not bytes.
 */
import { PassThrough, type Readable } from 'node:stream';
import { IntegrityError } from '../../../kernel/errors';
import { deviceNumbers, type TreeEntry } from './format';
import type { TreeSource } from './restore';

const BLOCK = 512;
/** The largest values ustar's octal fields hold: size and mtime 11 digits, ids and devices 7. */
const MAX_11 = 0o77777777777;
const MAX_7 = 0o7777777;

const TYPEFLAG: Record<TreeEntry['type'], string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

/** A PAX extended header's records: `<len> <key>=<value>\n`, `len` counting the whole record. */
export function paxRecords(records: ReadonlyArray<readonly [string, Buffer]>): Buffer {
  return Buffer.concat(
    records.map(([key, value]) => {
      const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
      let length = body.length + 1;
      while (String(length).length + body.length !== length) {
        length = body.length + String(length).length;
      }
      return Buffer.concat([Buffer.from(String(length)), body]);
    }),
  );
}

function octal(block: Buffer, offset: number, width: number, value: number): void {
  // `width` bytes: digits, then a NUL.
  block.write(value.toString(8).padStart(width - 1, '0'), offset, width - 1, 'ascii');
  block[offset + width - 1] = 0;
}

const isAscii = (text: string) => /^[\x20-\x7e]*$/.test(text);

/** `name` as ustar's prefix and name fields, or undefined when it does not fit them. */
function splitName(name: string): { prefix: string; name: string } | undefined {
  if (!isAscii(name)) return undefined;
  if (name.length <= 100) return { prefix: '', name };
  // Split at a slash so that the name part is at most 100 bytes and the prefix at most 155.
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    if (i <= 155 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) {
      return { prefix: name.slice(0, i), name: name.slice(i + 1) };
    }
  }
  return undefined;
}

interface Fields {
  name: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
}

/** One ustar header block; fields that do not fit are left for the PAX header before it. */
function ustarHeader(f: Fields): Buffer {
  const block = Buffer.alloc(BLOCK);
  const split = splitName(f.name) ?? { prefix: '', name: 'PaxPath' };
  block.write(split.name, 0, 100, 'ascii');
  octal(block, 100, 8, f.mode & 0o7777);
  octal(block, 108, 8, f.uid <= MAX_7 ? f.uid : 0);
  octal(block, 116, 8, f.gid <= MAX_7 ? f.gid : 0);
  octal(block, 124, 12, f.size <= MAX_11 ? f.size : 0);
  octal(block, 136, 12, f.mtime >= 0 && f.mtime <= MAX_11 ? f.mtime : 0);
  block.write(f.typeflag, 156, 1, 'ascii');
  if (f.linkname !== undefined && f.linkname.length <= 100 && isAscii(f.linkname)) {
    block.write(f.linkname, 157, 100, 'ascii');
  }
  block.write('ustar\x0000', 257, 8, 'ascii');
  octal(block, 329, 8, f.devmajor !== undefined && f.devmajor <= MAX_7 ? f.devmajor : 0);
  octal(block, 337, 8, f.devminor !== undefined && f.devminor <= MAX_7 ? f.devminor : 0);
  block.write(split.prefix, 345, 155, 'ascii');
  // The checksum is the sum of the header's bytes with its own field read as spaces.
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\x00 `, 148, 8, 'ascii');
  return block;
}

/** What ustar cannot hold of `f` (and `xattrs`, base64 values), as PAX records. */
function paxOf(f: Fields, xattrs: Record<string, string> | undefined): Array<[string, Buffer]> {
  const records: Array<[string, Buffer]> = [];
  if (!splitName(f.name)) records.push(['path', Buffer.from(f.name)]);
  if (f.linkname !== undefined && (f.linkname.length > 100 || !isAscii(f.linkname))) {
    records.push(['linkpath', Buffer.from(f.linkname)]);
  }
  if (f.size > MAX_11) records.push(['size', Buffer.from(String(f.size))]);
  if (f.uid > MAX_7) records.push(['uid', Buffer.from(String(f.uid))]);
  if (f.gid > MAX_7) records.push(['gid', Buffer.from(String(f.gid))]);
  if (f.mtime < 0 || f.mtime > MAX_11) records.push(['mtime', Buffer.from(String(f.mtime))]);
  for (const [name, value] of Object.entries(xattrs ?? {})) {
    records.push([`SCHILY.xattr.${name}`, Buffer.from(value, 'base64')]);
  }
  return records;
}

function fieldsOf(entry: TreeEntry, name: string, prefix: string): Fields {
  const f: Fields = {
    name,
    typeflag: TYPEFLAG[entry.type],
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    size: entry.type === 'file' ? (entry.size ?? 0) : 0,
    mtime: Math.floor(Number(BigInt(entry.mtime) / 1_000_000n) / 1000),
  };
  if (entry.link !== undefined) {
    f.linkname = entry.type === 'hardlink' ? `${prefix}/${entry.link}` : entry.link;
  }
  if (entry.type === 'char' || entry.type === 'block') {
    const { major, minor } = deviceNumbers(entry.rdev ?? 0);
    f.devmajor = major;
    f.devminor = minor;
  }
  return f;
}

/** Zero bytes that pad `size` bytes of data to a whole block. */
function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

type Write = (bytes: Buffer) => Promise<void>;

/** The headers of one entry: a PAX header first when ustar cannot hold all of it. */
async function writeHeaders(write: Write, f: Fields, xattrs?: Record<string, string>) {
  const records = paxOf(f, xattrs);
  if (records.length > 0) {
    const body = paxRecords(records);
    await write(
      ustarHeader({
        name: 'PaxHeader',
        typeflag: 'x',
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: body.length,
        mtime: Math.min(Math.max(f.mtime, 0), MAX_11),
      }),
    );
    await write(Buffer.concat([body, padding(body.length)]));
  }
  await write(ustarHeader(f));
}

/** Writes the tree's entries under `prefix/`, their bytes as the data stream gives them. */
async function writeTree(write: Write, source: TreeSource, prefix: string): Promise<void> {
  const index = source.entries()[Symbol.asyncIterator]();
  let current: { left: number; size: number; path: string } | undefined;
  const nameOf = (entry: TreeEntry) =>
    entry.path === '' ? `${prefix}/` : `${prefix}/${entry.path}${entry.type === 'dir' ? '/' : ''}`;
  const nextDataFile = async () => {
    for (;;) {
      const next = await index.next();
      if (next.done) return undefined;
      const entry = next.value;
      const f = fieldsOf(entry, nameOf(entry), prefix);
      // Linux keeps no user.* xattrs on a symlink, and restores skip them (restore.ts).
      await writeHeaders(write, f, entry.type === 'symlink' ? undefined : entry.xattrs);
      if (f.size > 0) return { left: f.size, size: f.size, path: entry.path };
    }
  };
  await source.forEachChunk(async (bytes) => {
    let at = 0;
    while (at < bytes.length) {
      current ??= await nextDataFile();
      if (!current) throw new IntegrityError("the tree's data outlasts its index");
      const n = Math.min(current.left, bytes.length - at);
      // The bytes are valid only until this write resolves: the pipe keeps a copy.
      await write(Buffer.from(bytes.subarray(at, at + n)));
      current.left -= n;
      at += n;
      if (current.left === 0) {
        await write(padding(current.size));
        current = undefined;
      }
    }
  });
  if (current) throw new IntegrityError(`the tree's data ends inside ${current.path}`);
  const last = await nextDataFile();
  if (last) throw new IntegrityError(`the tree's data ends before ${last.path}`);
}

/**
 * Resolves at the stream's next 'drain' or 'close', and leaves no listener behind: a tar of many
 * GiB waits here thousands of times (racing two `events.once` left the loser's listeners on the
 * stream each time, an ever longer list).
 */
function drainedOrClosed(out: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
  });
}

/** The tree under `prefix/` as a tar stream (`prefix` without slashes at either end). */
export function treeAsTar(source: TreeSource, prefix: string): Readable {
  return treesAsTar([{ tree: source, prefix }]);
}

/** A part of treesAsTar's archive: a small file given whole, or a tree under `prefix/`. */
export type TarPart =
  { file: string; content: Buffer; mode?: number } | { tree: TreeSource; prefix: string };

/**
 * Files and trees one after the other as one tar stream: an archive in an engine's own layout
 * (an LXD instance's export: `backup/index.yaml`, each snapshot's tree, its container's).
 */
export function treesAsTar(parts: readonly TarPart[]): Readable {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const write: Write = async (bytes) => {
    if (out.destroyed) throw new Error('the tar stream was closed');
    if (!out.write(bytes)) {
      await drainedOrClosed(out);
      if (out.destroyed) throw new Error('the tar stream was closed');
    }
  };
  (async () => {
    for (const part of parts) {
      if ('file' in part) {
        await writeHeaders(write, {
          name: part.file,
          typeflag: '0',
          mode: part.mode ?? 0o644,
          uid: 0,
          gid: 0,
          size: part.content.length,
          mtime: Math.floor(Date.now() / 1000),
        });
        await write(Buffer.concat([part.content, padding(part.content.length)]));
      } else {
        await writeTree(write, part.tree, part.prefix);
      }
    }
    // The end of the archive: two zero blocks.
    await write(Buffer.alloc(2 * BLOCK));
    out.end();
  })().catch((err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))));
  return out;
}
