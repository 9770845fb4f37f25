/**
 * File-level access to a point's tree streams: `stowage ls POINT [PATH]` and `stowage restore
 * POINT --file PATH... --dest DIR`. A path names a place in the point's tree: relative to the
 * tree's root when the point has one tree stream, `STREAM/PATH` when it has several (`volume/
 * data/etc/app.conf`). Only the index is read to list; only the chunks of the files asked for
 * are read to restore them.
 */
import { promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { DriverError } from '../../../kernel/errors';
import type { TreeListing, TreeListingEntry } from '../../../statemachines/contracts';
import type { DriverContext, StoredStream } from '../driver';
import { errnoOf } from './backup';
import { isUnder, TREE_KIND, type TreeEntry } from './format';

/** A listing carries at most this many entries (it travels in a task result and a job record). */
export const LISTING_MAX = 1000;

export interface TreeReader {
  readonly streams: readonly StoredStream[];
  treeEntries(name: string): AsyncIterable<TreeEntry>;
  restoreTree(
    name: string,
    root: string,
    ctx: DriverContext,
    options?: { paths?: readonly string[] },
  ): Promise<{ entries: number; files: number; bytes: number; skipped: number }>;
}

export function treeStreamsOf(reader: { readonly streams: readonly StoredStream[] }): string[] {
  return reader.streams.filter((s) => s.kind === TREE_KIND).map((s) => s.name);
}

function noTrees(): DriverError {
  return new DriverError(
    'the recovery point has no tree stream (points taken before tree streams, or through an engine API, hold tar archives): restore it whole instead',
  );
}

/** Which tree stream a path of the point is in, and the path inside that tree. */
export function locate(trees: readonly string[], path: string): { stream: string; rel: string } {
  if (trees.length === 0) throw noTrees();
  const clean = path.replace(/^\/+|\/+$/g, '');
  if (trees.length === 1) return { stream: trees[0]!, rel: clean };
  const stream = [...trees]
    .sort((a, b) => b.length - a.length)
    .find((t) => clean === t || clean.startsWith(`${t}/`));
  if (!stream) {
    throw new DriverError(
      `"${path}" is in none of the point's tree streams; write STREAM/PATH with one of: ${trees.join(', ')}`,
    );
  }
  return { stream, rel: clean.slice(stream.length + 1) };
}

function listed(entry: TreeEntry, prefix: string): TreeListingEntry {
  return {
    path: prefix ? `${prefix}/${entry.path}` : entry.path,
    type: entry.type,
    size: entry.size ?? 0,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    mtime: new Date(Number(BigInt(entry.mtime) / 1_000_000n)).toISOString(),
    ...(entry.link !== undefined ? { link: entry.link } : {}),
  };
}

/** The entries directly in `path` (or `path` itself when it is not a directory). */
export async function listTree(reader: TreeReader, path: string): Promise<TreeListing> {
  const trees = treeStreamsOf(reader);
  const clean = path.replace(/^\/+|\/+$/g, '');
  if (trees.length > 1 && clean === '') {
    const entries = trees.map((t) => ({
      path: t,
      type: 'tree',
      size: reader.streams.find((s) => s.name === t)?.size ?? 0,
      mode: 0,
      uid: 0,
      gid: 0,
      mtime: new Date(0).toISOString(),
    }));
    return { path: '', entries, truncated: false };
  }
  const { stream, rel } = locate(trees, clean);
  const prefix = trees.length > 1 ? stream : '';
  const entries: TreeListingEntry[] = [];
  let found = false;
  let truncated = false;
  for await (const entry of reader.treeEntries(stream)) {
    if (entry.path === rel) {
      found = true;
      if (entry.type !== 'dir') {
        entries.push(listed(entry, prefix));
        break;
      }
      continue;
    }
    if (!isUnder(entry.path, rel)) {
      // Walk order: past the directory's subtree, nothing more is in it.
      if (found) break;
      continue;
    }
    const below = rel === '' ? entry.path : entry.path.slice(rel.length + 1);
    if (below.includes('/')) continue;
    if (entries.length >= LISTING_MAX) {
      truncated = true;
      break;
    }
    entries.push(listed(entry, prefix));
  }
  if (!found) throw new DriverError(`"${path}" is not in the recovery point`);
  return { path: clean, entries, truncated };
}

/**
 * Refuses a destination outside the trees the agent serves (`stowage agent --paths`), as path
 * restores are: `dest` is resolved with every symlink (its parent's, when it does not exist yet),
 * so a link inside an allowed tree cannot lead the files out of it. Without `--paths` the agent
 * serves every path, as for `path:` targets.
 */
async function checkDestination(dest: string, allowed: readonly string[] | undefined) {
  if (!dest.startsWith('/') || dest.split('/').some((part) => part === '.' || part === '..')) {
    throw new DriverError(`--dest ${dest} must be an absolute path without . or .. parts`);
  }
  if (!allowed) return;
  let real: string;
  try {
    real = await fs.realpath(dest);
  } catch {
    try {
      real = join(await fs.realpath(dirname(dest)), basename(dest));
    } catch {
      throw new DriverError(`--dest ${dest}: its parent directory does not exist`);
    }
  }
  if (
    !allowed.some(
      (root) => real === root || real.startsWith(root.endsWith('/') ? root : `${root}/`),
    )
  ) {
    throw new DriverError(
      `--dest ${dest}${real !== dest ? ` (which leads to ${real})` : ''} is outside the paths this agent serves (${allowed.join(', ')}); choose a directory inside them`,
    );
  }
}

/**
 * Writes `files` of the point, with their metadata and the directories above them, below the
 * directory `dest` on this host (created when missing; its parent must exist). A file that is
 * already there is refused (nothing is overwritten). With several tree streams, each stream's
 * files go below `dest/STREAM`.
 */
export async function restoreFiles(
  reader: TreeReader,
  files: readonly string[],
  dest: string,
  ctx: DriverContext,
  allowed?: readonly string[],
): Promise<{ files: number; bytes: number }> {
  await checkDestination(dest, allowed);
  const trees = treeStreamsOf(reader);
  const byStream = new Map<string, string[]>();
  for (const file of files) {
    const { stream, rel } = locate(trees, file);
    byStream.set(stream, [...(byStream.get(stream) ?? []), rel]);
  }
  for (const [stream, paths] of byStream) {
    const missing = new Set(paths);
    for await (const entry of reader.treeEntries(stream)) {
      missing.delete(entry.path);
      if (missing.size === 0) break;
    }
    if (missing.size > 0) {
      throw new DriverError(`not in the recovery point: ${[...missing].join(', ')}`);
    }
  }
  try {
    await fs.mkdir(dest, { mode: 0o755 });
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') {
      throw new DriverError(
        `cannot create ${dest}: ${(err as Error).message}; give a directory whose parent exists`,
        { cause: err },
      );
    }
    if (!(await fs.lstat(dest)).isDirectory()) {
      throw new DriverError(`${dest} exists and is not a directory; give a directory`);
    }
  }
  let count = 0;
  let bytes = 0;
  for (const [stream, paths] of byStream) {
    const root = trees.length > 1 ? join(dest, stream) : dest;
    await fs.mkdir(root, { recursive: true, mode: 0o755 });
    ctx.phase(`restoring ${paths.length} path(s) of ${stream}`);
    const result = await reader.restoreTree(stream, root, ctx, { paths });
    count += result.files;
    bytes += result.bytes;
  }
  return { files: count, bytes };
}
