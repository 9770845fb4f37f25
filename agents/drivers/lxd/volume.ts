/**
 * What the backup and restore of LXD custom storage volumes share: the shape of a volume as LXD
 * returns it, the metadata a recovery point records, paths, and lookups that tell "absent" from
 * "failed". A volume target is `lxd-volume:POOL/NAME`; instance backups never include custom
 * volumes (LXD exports only the instance's own root), so each volume is a target of its own.
 */
import { ValidationError } from '../../../kernel/errors';
import { isNotFound, translate } from './errors';
import type { Engine } from './instance';
import type { TreeRecord } from './host-tree';

/** The parts of `GET /1.0/storage-pools/{pool}/volumes/custom/{name}` the driver reads. */
export interface LxdVolume {
  name: string;
  type: string;
  description: string;
  config: Record<string, string>;
  content_type: 'filesystem' | 'block' | string;
  used_by?: string[] | null;
}

export interface LxdVolumeSnapshot {
  /** As LXD lists it: `VOLUME/SNAPSHOT`. */
  name: string;
  description: string;
  config: Record<string, string>;
  expires_at?: string;
}

export interface LxdPool {
  name: string;
  driver: string;
  status?: string;
}

export const VOLUME_METADATA_FORMAT = 'stowage-lxd-volume/1';
export const VOLUME_STREAM = 'volume-export';
export const VOLUME_KIND = 'lxd-volume-backup-tar';

/** What a recovery point of a custom volume records besides its export stream. */
export interface LxdVolumeBackupMetadata {
  format: typeof VOLUME_METADATA_FORMAT;
  project: string;
  pool: string;
  /** The pool's storage driver (dir, zfs, btrfs...). */
  poolDriver: string;
  name: string;
  description: string;
  contentType: string;
  config: Record<string, string>;
  /** The snapshots the export holds (none when volumeOnly), oldest first. */
  snapshots: Array<{ name: string; description: string; expiresAt?: string }>;
  volumeOnly: boolean;
  /** Whether the export is in the pool driver's optimized format (see export.ts). */
  optimizedStorage: boolean;
  /**
   * How the volume was read (host-tree.ts): `host`, its pool's directory as tree streams (`tree`
   * and `snapshot/NAME`); `engine-api` (or absent, older points), LXD's export.
   */
  read?: 'host' | 'engine-api';
  /** Per tree stream, what was read from the host and what came from the last point. */
  trees?: TreeRecord[];
}

export function poolPath(pool: string): string {
  return `/1.0/storage-pools/${encodeURIComponent(pool)}`;
}

export function volumePath(pool: string, volume: string): string {
  return `${poolPath(pool)}/volumes/custom/${encodeURIComponent(volume)}`;
}

export async function getVolume(
  engine: Engine,
  pool: string,
  volume: string,
): Promise<LxdVolume | undefined> {
  try {
    return await engine.client.get<LxdVolume>(volumePath(pool, volume));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw translate(err, `reading custom volume ${pool}/${volume}`, engine.socketPath);
  }
}

export async function getPool(engine: Engine, pool: string): Promise<LxdPool | undefined> {
  try {
    return await engine.client.get<LxdPool>(poolPath(pool));
  } catch (err) {
    // LXD 5.0 answers an unknown pool with 404 on GET (and 500 "not found" on some POSTs).
    if (isNotFound(err)) return undefined;
    throw translate(err, `reading storage pool ${pool}`, engine.socketPath);
  }
}

export async function listPools(engine: Engine): Promise<LxdPool[]> {
  try {
    return await engine.client.get<LxdPool[]>('/1.0/storage-pools?recursion=1');
  } catch (err) {
    throw translate(err, 'listing storage pools', engine.socketPath);
  }
}

/** The pool, or a ValidationError that lists the pools there are. */
export async function requirePool(engine: Engine, pool: string): Promise<LxdPool> {
  const found = await getPool(engine, pool);
  if (found) return found;
  const names = (await listPools(engine)).map((p) => p.name).sort();
  throw new ValidationError(
    `storage pool "${pool}" does not exist on this LXD server; its pools are: ${names.join(', ') || 'none'}`,
  );
}

/** Every custom volume of every pool, with how many snapshots it has. */
export async function listVolumes(
  engine: Engine,
): Promise<Array<{ pool: LxdPool; volume: LxdVolume; snapshots: number }>> {
  const out: Array<{ pool: LxdPool; volume: LxdVolume; snapshots: number }> = [];
  for (const pool of await listPools(engine)) {
    let volumes: LxdVolume[];
    try {
      volumes = await engine.client.get<LxdVolume[]>(
        `${poolPath(pool.name)}/volumes/custom?recursion=1`,
      );
    } catch (err) {
      if (isNotFound(err)) continue; // the pool went away meanwhile
      throw translate(err, `listing custom volumes of pool ${pool.name}`, engine.socketPath);
    }
    // `?recursion=1` lists snapshots too, as `VOLUME/SNAPSHOT`.
    const snapshots = new Map<string, number>();
    for (const v of volumes) {
      const slash = v.name.indexOf('/');
      if (slash > 0) {
        const parent = v.name.slice(0, slash);
        snapshots.set(parent, (snapshots.get(parent) ?? 0) + 1);
      }
    }
    for (const v of volumes) {
      if (!v.name.includes('/'))
        out.push({ pool, volume: v, snapshots: snapshots.get(v.name) ?? 0 });
    }
  }
  return out;
}

export async function listSnapshots(
  engine: Engine,
  pool: string,
  volume: string,
): Promise<LxdVolumeSnapshot[]> {
  try {
    return await engine.client.get<LxdVolumeSnapshot[]>(
      `${volumePath(pool, volume)}/snapshots?recursion=1`,
    );
  } catch (err) {
    throw translate(err, `listing snapshots of ${pool}/${volume}`, engine.socketPath);
  }
}

/** Deletes a custom volume with its snapshots; one already gone is fine. */
export async function removeVolume(engine: Engine, pool: string, volume: string): Promise<void> {
  try {
    await engine.client.run('DELETE', volumePath(pool, volume));
  } catch (err) {
    if (isNotFound(err)) return;
    throw translate(err, `deleting custom volume ${pool}/${volume}`, engine.socketPath);
  }
}
