/**
 * LXD instances and custom volumes read and written straight in their storage pool's directory
 * on this host (tree streams, agents/core/tree), LXD's export API being the fallback.
 *
 * On a `dir` pool LXD keeps every instance and volume as a plain directory under the pool's
 * `source` (its config, e.g. /var/lib/lxd/storage-pools/default):
 *
 * - `containers/<NAME>` (`<PROJECT>_<NAME>` outside the default project): LXD's `backup.yaml`
 *   (its own record of the instance, rewritten by LXD on every change), `metadata.yaml`,
 *   `templates/` and `rootfs/`; its snapshots in `containers-snapshots/<NAME>/<SNAPSHOT>`, laid
 *   out alike;
 * - `custom/<PROJECT>_<NAME>` for a filesystem custom volume (the project prefix always, the
 *   default project too), its snapshots in `custom-snapshots/<PROJECT>_<NAME>/<SNAPSHOT>`.
 *
 * Owners on disk are the host's: an unprivileged container's files belong to the shifted ids
 * (container root is host uid 100000 with this host's `root:100000:...` subuid range), and the
 * instance's `volatile.last_state.idmap` says which map they are in; a custom volume records
 * its own in `volatile.idmap.last`. A tree stream stores what is on disk, so a restore writes the
 * same ids back and puts that key back too: LXD then shifts the files at start only if the new
 * instance's map differs (another host, an isolated idmap), as it does after its own import.
 *
 * Reading the directory, rather than `POST .../backups` and its export, lets a backup skip every
 * file unchanged since the last point (size, mtime, ctime, inode). LXD's own snapshots are not
 * the way to a consistent read here: on a `dir` pool a snapshot is an rsync copy of the whole
 * instance (every byte read and written, and new inodes and ctimes, so no file could be taken
 * from the last point); the consistency modes freeze or stop the instance while its directory is
 * read instead. Where the agent cannot see the directory (another driver, a pool source it cannot
 * see, an agent told `hostAccess: false`), a block volume, or optimized storage is asked for,
 * the export it has always been; the point records which (`read`).
 */
import { promises as fs } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { LogEvent } from '../../../kernel/logger';
import { DriverError, Unsupported } from '../../../kernel/errors';
import type { BackupSink, DriverContext, RestoreSource, StoredTree } from '../../core/driver';
import { TREE_KIND } from '../../core/tree/format';
import { isNotFound, translate } from './errors';
import type { Engine } from './instance';
import { poolPath } from './volume';

/** How a point read an instance or volume: in its pool's directory, or through LXD's export. */
export type ReadPath = 'host' | 'engine-api';

/** The instance's (or volume's) own tree stream, and each snapshot's. */
export const MAIN_TREE = 'tree';
export function snapshotTree(snapshot: string): string {
  return `snapshot/${snapshot}`;
}

/** What an instance directory holds that a restore writes; `backup.yaml` is LXD's own. */
export const INSTANCE_PATHS = ['metadata.yaml', 'templates', 'rootfs'] as const;

/** What a tree point records per stream: the bytes read from the host and those reused. */
export interface TreeRecord {
  stream: string;
  entries: number;
  filesRead: number;
  filesReused: number;
  /** Bytes of files read from the host for this stream (the rest came from the last point). */
  bytesRead: number;
  bytesReused: number;
}

interface PoolConfig {
  name: string;
  driver: string;
  config?: Record<string, string>;
}

export interface HostDirs {
  /** The instance's or volume's directory. */
  dir: string;
  /** The directory holding its snapshots' directories (may not exist without snapshots). */
  snapshots: string;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await fs.lstat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** statfs's f_type of a btrfs file system. */
const BTRFS_MAGIC = 0x9123683e;

/**
 * The pool's directory on this host, when the agent may read it there (`read`: a backup) or
 * also write it (`write`: a restore). A `dir` pool's is its `source`. A `btrfs` pool is one file
 * system LXD keeps mounted at `<LXD's directory>/storage-pools/<pool>` (its source is a device
 * or a loop file), every instance, volume and snapshot a subvolume in it with the same layout as
 * a `dir` pool's, so a backup reads it there too; a restore does not write it, since LXD makes a
 * btrfs snapshot read-only (LXD's import does that restore: tree-import.ts). LXD's directory is
 * the one holding its socket; the mount is checked to be btrfs. zfs and lvm keep an instance
 * mounted only while it runs, so those go through LXD's API.
 */
export async function poolDir(
  engine: Engine,
  pool: string | undefined,
  ctx: DriverContext,
  purpose: 'read' | 'write' = 'write',
): Promise<string | undefined> {
  if (engine.hostAccess === false || pool === undefined) return undefined;
  let found: PoolConfig;
  try {
    found = await engine.client.get<PoolConfig>(poolPath(pool));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw translate(err, `reading storage pool ${pool}`, engine.socketPath);
  }
  const source = found.config?.source;
  let real: string | undefined;
  let reason = found.driver === 'dir' ? 'source not visible' : `driver ${found.driver}`;
  if (found.driver === 'dir' && source && isAbsolute(source)) {
    real = await fs.realpath(source).catch(() => undefined);
  } else if (found.driver === 'btrfs' && purpose === 'read') {
    const mount = join(dirname(engine.socketPath), 'storage-pools', pool);
    const fsType = await fs.statfs(mount).then(
      (st) => st.type,
      () => undefined,
    );
    if (fsType === BTRFS_MAGIC) real = await fs.realpath(mount).catch(() => undefined);
    else reason = `driver btrfs, not mounted at ${mount}`;
  }
  if (!real || !(await isDirectory(real))) {
    ctx.log.info(LogEvent.driverStep, { step: 'pool through the LXD API', pool, reason });
    return undefined;
  }
  return real;
}

function instanceDirName(project: string, name: string): string {
  return project === 'default' ? name : `${project}_${name}`;
}

/** Where a container's directories are in a dir pool's directory `root`, if they exist. */
export async function instanceDirs(
  engine: Engine,
  root: string | undefined,
  name: string,
): Promise<HostDirs | undefined> {
  if (root === undefined) return undefined;
  const own = instanceDirName(engine.project, name);
  const dirs = {
    dir: join(root, 'containers', own),
    snapshots: join(root, 'containers-snapshots', own),
  };
  return (await isDirectory(dirs.dir)) ? dirs : undefined;
}

/** Where a filesystem custom volume's directories are in a dir pool's directory, if they exist. */
export async function volumeDirs(
  engine: Engine,
  root: string | undefined,
  volume: string,
): Promise<HostDirs | undefined> {
  if (root === undefined) return undefined;
  const own = `${engine.project}_${volume}`;
  const dirs = { dir: join(root, 'custom', own), snapshots: join(root, 'custom-snapshots', own) };
  return (await isDirectory(dirs.dir)) ? dirs : undefined;
}

/** Stores `dir` as the tree stream `stream` and says what it read. */
export async function writeTreeOf(
  sink: BackupSink,
  stream: string,
  dir: string,
  ctx: DriverContext,
): Promise<TreeRecord> {
  if (!sink.writeTree) throw new DriverError('this sink cannot store tree streams');
  const stored: StoredTree = await sink.writeTree({ name: stream }, dir, ctx);
  for (const warning of stored.warnings) {
    ctx.log.warn(LogEvent.driverStep, { step: 'tree warning', stream, warning });
  }
  return {
    stream,
    entries: stored.entries,
    filesRead: stored.filesRead,
    filesReused: stored.filesReused,
    bytesRead: stored.size - stored.bytesReused,
    bytesReused: stored.bytesReused,
  };
}

/** Whether the point holds its instance or volume as tree streams. */
export function isTreePoint(source: RestoreSource): boolean {
  return source.streams.some((s) => s.name === MAIN_TREE && s.kind === TREE_KIND);
}

/**
 * A directory LXD just made for a restore (an empty instance, volume or snapshot): it must be a
 * real directory (no symlink on the last component) before anything is written into it.
 */
export async function requireMadeDir(path: string, what: string): Promise<void> {
  if (!(await isDirectory(path))) {
    throw new DriverError(`LXD made ${what}, but ${path} is not a directory on this host`);
  }
}

/** The refusal when a tree point cannot be written where it is asked to go. */
export function notOnHost(what: string, pool: string | undefined): Unsupported {
  return new Unsupported(
    `${what} was read on the host as a tree and can be restored only into a dir pool this agent sees on its host; pool ${pool ?? '(the default profile’s)'} is not one (choose one with --pool)`,
  );
}
