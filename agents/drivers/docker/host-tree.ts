/**
 * Volumes and bind mounts read and written straight on the host (tree streams,
 * agents/core/tree), the engine's archive API being the fallback.
 *
 * The agent runs as root beside dockerd, so a `local` volume's data is a plain directory it can
 * see: its `Mountpoint` (`/var/lib/docker/volumes/<name>/_data`). Reading it there, rather than
 * through `GET /containers/{helper}/archive`, lets a backup skip every file unchanged since the
 * last point (its size, mtime, ctime and inode), so an incremental costs what changed. Where the
 * agent cannot see it (`hostAccess: false`: a remote engine; a volume driver other than `local`,
 * or a `local` volume with mount options, whose data lives elsewhere), the tar through the API
 * it has always been.
 */
import { promises as fs } from 'node:fs';
import { isAbsolute } from 'node:path';
import { DriverError, Unsupported } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { DriverContext, RestoreOutcome, RestoreSource } from '../../core/driver';
import { restoreFiles, type TreeReader } from '../../core/tree/files';
import type { Engine } from './engine';
import { statusOf, translate } from './errors';

/** How a point read a volume or bind mount: on the host, or through dockerd's archive API. */
export type ReadPath = 'host' | 'engine-api';

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await fs.lstat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** The volume's data directory on this host, when the agent may read and write it there. */
export async function hostDirOfVolume(
  engine: Engine,
  volume: string,
  ctx: DriverContext,
): Promise<string | undefined> {
  if (!engine.hostAccess) return undefined;
  let inspect: { Driver?: string; Mountpoint?: string; Options?: Record<string, string> | null };
  try {
    inspect = (await engine.docker.getVolume(volume).inspect()) as typeof inspect;
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw translate(err, `inspecting volume ${volume}`, engine.socketPath);
  }
  const mountpoint = inspect.Mountpoint;
  const plain = inspect.Driver === 'local' && Object.keys(inspect.Options ?? {}).length === 0;
  if (!plain || !mountpoint || !isAbsolute(mountpoint) || !(await isDirectory(mountpoint))) {
    ctx.log.info(LogEvent.driverStep, {
      step: 'volume through the engine API',
      volume,
      reason: !plain ? `driver ${inspect.Driver} with options` : 'mountpoint not visible',
    });
    return undefined;
  }
  return mountpoint;
}

/** A bind mount's host directory, when the agent may read it there. */
export async function hostDirOfBind(engine: Engine, source: string): Promise<string | undefined> {
  if (!engine.hostAccess || !isAbsolute(source)) return undefined;
  return (await isDirectory(source)) ? source : undefined;
}

/**
 * File-level restore into a Docker volume (`--file PATH... --into-volume NAME`): the volume is
 * created when missing, and the files are written straight into its directory on the host,
 * reading only their chunks. Nothing that is already in the volume is overwritten (a file
 * that exists is refused); no container is touched.
 */
export async function restoreFilesIntoVolume(
  engine: Engine,
  source: RestoreSource,
  files: readonly string[],
  volume: string,
  target: string,
  ctx: DriverContext,
): Promise<RestoreOutcome> {
  if (!source.restoreTree) {
    throw new DriverError('this restore source cannot read tree streams');
  }
  try {
    await engine.docker.getVolume(volume).inspect();
  } catch (err) {
    if (statusOf(err) !== 404)
      throw translate(err, `inspecting volume ${volume}`, engine.socketPath);
    try {
      await engine.docker.createVolume({ Name: volume });
    } catch (createErr) {
      throw translate(createErr, `creating volume ${volume}`, engine.socketPath);
    }
  }
  const dir = await hostDirOfVolume(engine, volume, ctx);
  if (!dir) {
    throw new Unsupported(
      `volume ${volume} is not a plain local volume this agent sees on its host; restore the files with --dest DIR instead`,
    );
  }
  if (!source.treeEntries) throw new DriverError('this restore source cannot read tree indexes');
  await restoreFiles(source as TreeReader, files, dir, ctx);
  return { restoredTarget: target };
}
