/**
 * Backup of one LXD custom storage volume (`lxd-volume:POOL/NAME`): its config, description,
 * content type (filesystem or block) and snapshot names as metadata, and one stream,
 * `volume-export`: LXD's own volume backup
 * (`POST /1.0/storage-pools/{pool}/volumes/custom/{name}/backups`, uncompressed), with the
 * volume's snapshots unless `snapshots: false` (LXD's `volume_only`), exactly as LXD does by
 * default. The LXD-side backup is always deleted afterwards (export.ts).
 *
 * A volume is captured live: LXD copies it while instances that use it keep running
 * (crash-consistent). `pause`/`stop` would have to hold those instances; they are refused rather
 * than silently ignored.
 */
import { TargetNotFound, ValidationError } from '../../../kernel/errors';
import { splitVolumeName } from '../../../kernel/platforms/lxd-volume';
import type { BackupOutcome, BackupSink, DriverContext } from '../../core/driver';
import { checkAborted } from '../../core/driver-streams';
import type { LxdBackupOptions } from './backup';
import { exportBackup, optimizedOn } from './export';
import type { Engine } from './instance';
import {
  VOLUME_KIND,
  VOLUME_METADATA_FORMAT,
  VOLUME_STREAM,
  getPool,
  getVolume,
  listSnapshots,
  volumePath,
  type LxdVolumeBackupMetadata,
} from './volume';

export async function backupVolume(
  engine: Engine,
  name: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: LxdBackupOptions = {},
): Promise<BackupOutcome> {
  const { pool, volume } = splitVolumeName(name);
  if (options.consistency && options.consistency !== 'live') {
    throw new ValidationError(
      `a custom volume is captured live; --consistency ${options.consistency} applies to instances (back up the instance that uses lxd-volume:${name} with it)`,
    );
  }
  const volumeOnly = options.snapshots === false;

  ctx.phase('reading volume config');
  const found = await getVolume(engine, pool, volume);
  const poolInfo = found ? await getPool(engine, pool) : undefined;
  if (!found || !poolInfo) {
    throw new TargetNotFound(
      `lxd-volume:${name} not found: no custom volume ${volume} in pool ${pool}`,
    );
  }
  const snapshots = volumeOnly ? [] : await listSnapshots(engine, pool, volume);
  const metadata: LxdVolumeBackupMetadata = {
    format: VOLUME_METADATA_FORMAT,
    project: engine.project,
    pool,
    poolDriver: poolInfo.driver,
    name: volume,
    description: found.description,
    contentType: found.content_type,
    config: found.config,
    snapshots: snapshots.map((s) => ({
      name: s.name.slice(s.name.lastIndexOf('/') + 1),
      description: s.description,
      ...(s.expires_at && !s.expires_at.startsWith('0001-') ? { expiresAt: s.expires_at } : {}),
    })),
    volumeOnly,
    optimizedStorage: optimizedOn(options.optimizedStorage, poolInfo.driver),
  };
  if (options.optimizedStorage && !metadata.optimizedStorage) {
    ctx.phase(`pool ${pool} (${poolInfo.driver}) has no optimized storage: plain export`);
  }
  checkAborted(ctx, `backup of lxd-volume:${name}`);

  const stored = await exportBackup(
    engine,
    {
      collection: `${volumePath(pool, volume)}/backups`,
      what: `custom volume ${pool}/${volume}`,
      request: { volume_only: volumeOnly, optimized_storage: metadata.optimizedStorage },
      exportPhase: 'exporting volume',
      stream: { name: VOLUME_STREAM, kind: VOLUME_KIND },
    },
    sink,
    ctx,
  );
  ctx.phase('done');
  return {
    metadata: metadata as unknown as Record<string, unknown>,
    summary: {
      pool,
      optimized: metadata.optimizedStorage,
      contentType: found.content_type,
      snapshots: metadata.snapshots.length,
      bytes: stored.size,
    },
  };
}
