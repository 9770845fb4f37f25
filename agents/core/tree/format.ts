/**
 * Tree streams: a directory read from the host (a Docker volume's mountpoint, an LXD pool's
 * directory, a `path:` directory) stored as TWO streams of a recovery point:
 *
 * - the data stream (kind `tree`): the contents of the tree's regular files, concatenated in
 *   walk order. A file of more than 64 KiB starts on a chunk boundary and is chunked on its own,
 *   so its content is a whole run of the stream's chunks; smaller files are gathered, several
 *   to a chunk (about 1 MiB or 1,024 files), and their entry says where in that chunk they start
 *   (`skip`). A later backup takes an unchanged file's chunks from the previous point without
 *   reading it (restic's parent snapshot); a shared chunk only when every file in it is
 *   unchanged (backup.ts), so the stream stays the files' bytes in walk order;
 * - the index stream (kind `tree-index`, named `<data stream>.index`): one JSON line per entry,
 *   in walk order (depth first, names sorted by their bytes, a directory before its contents;
 *   the root first, as `""`), with the metadata needed to rebuild it and, for a file, the span
 *   of the data stream's chunks that hold its bytes.
 *
 * Both are ordinary streams: chunked, deduplicated (an unchanged tree's index mostly dedups
 * against the last one), encrypted, verified and garbage-collected like any other. Walk order is
 * the same in every backup, so the previous point's index is read alongside the walk, merged by
 * path in constant memory, whatever the number of files.
 */
import { StringDecoder } from 'node:string_decoder';

export const TREE_KIND = 'tree';
export const TREE_INDEX_KIND = 'tree-index';
export const TREE_FORMAT = 'stowage.tree/1';

export type TreeEntryType = 'dir' | 'file' | 'symlink' | 'hardlink' | 'fifo' | 'char' | 'block';

export interface TreeEntry {
  /** Relative to the tree's root, `/`-separated, `''` for the root itself. */
  path: string;
  type: TreeEntryType;
  /** Permission bits with setuid/setgid/sticky (st_mode & 07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Nanoseconds since the epoch, as decimal strings (exact, unlike a double). */
  mtime: string;
  ctime: string;
  ino: number;
  /** Regular files: bytes; their content is `chunks` of the data stream from `offset`. */
  size?: number;
  /** `[first chunk, count]` in the data stream's chunk list (files with content only). */
  chunks?: [number, number];
  /** The file's first byte in the data stream. */
  offset?: number;
  /**
   * Small files share chunks (one chunk, `count` 1): the bytes of that chunk before this file's
   * (absent when 0).
   */
  skip?: number;
  /** Hard link count when above 1 (the first path of such a file carries its bytes). */
  nlink?: number;
  /** Symlink: the target as written. Hardlink: the path (in this tree) of the file it names. */
  link?: string;
  /** Device nodes: st_rdev. */
  rdev?: number;
  /** Extended attributes (name → base64 value), where the host has them. */
  xattrs?: Record<string, string>;
}

export function indexStreamName(dataStream: string): string {
  return `${dataStream}.index`;
}

/**
 * Walk order: component by component, each compared by its UTF-8 bytes; a path before the paths
 * below it. The order of `walk()` in the backup, so two indexes can be merged in one pass.
 */
export function compareTreePaths(a: string, b: string): number {
  if (a === b) return 0;
  const pa = a === '' ? [] : a.split('/');
  const pb = b === '' ? [] : b.split('/');
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    if (pa[i] === pb[i]) continue;
    return Buffer.compare(Buffer.from(pa[i]!, 'utf8'), Buffer.from(pb[i]!, 'utf8'));
  }
  return pa.length - pb.length;
}

/** Whether `path` is `prefix` or below it (`''` is every path). */
export function isUnder(path: string, prefix: string): boolean {
  return prefix === '' || path === prefix || path.startsWith(`${prefix}/`);
}

/** Parses one index line; throws on anything that is not an entry. */
export function parseEntry(line: string): TreeEntry {
  const e = JSON.parse(line) as Partial<TreeEntry>;
  if (
    typeof e.path !== 'string' ||
    typeof e.type !== 'string' ||
    typeof e.mode !== 'number' ||
    typeof e.uid !== 'number' ||
    typeof e.gid !== 'number'
  ) {
    throw new Error(`not a tree index entry: ${line.slice(0, 200)}`);
  }
  return e as TreeEntry;
}

const DECODE_BYTES = 16 * 1024;

/** Yields the entries of an index stream's bytes, line by line, in constant memory. */
export async function* readEntries(
  bytes: AsyncIterable<Buffer | Uint8Array>,
): AsyncGenerator<TreeEntry> {
  // A multi-byte character may be cut between two pieces: the decoder keeps its first bytes.
  const decoder = new StringDecoder('utf8');
  let rest = '';
  for await (const piece of bytes) {
    // Decoded a slice at a time: a string of a whole piece (up to a chunk, 4 MiB) would live
    // while thousands of entries are parsed out of it, long enough to be moved to the old
    // generation, and a million-file index would leave hundreds of MiB there to collect.
    for (let at = 0; at < piece.length; at += DECODE_BYTES) {
      const part = piece.subarray(at, Math.min(piece.length, at + DECODE_BYTES));
      rest += decoder.write(Buffer.from(part.buffer, part.byteOffset, part.length));
      let nl = rest.indexOf('\n');
      let start = 0;
      while (nl !== -1) {
        const line = rest.slice(start, nl);
        if (line) yield parseEntry(line);
        start = nl + 1;
        nl = rest.indexOf('\n', start);
      }
      rest = rest.slice(start);
    }
  }
  rest += decoder.end();
  if (rest.trim()) yield parseEntry(rest);
}

/** Linux's st_rdev split into major and minor (glibc's gnu_dev_major/minor). */
export function deviceNumbers(rdev: number): { major: number; minor: number } {
  const r = BigInt(rdev);
  const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn));
  const minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
  return { major, minor };
}
