/**
 * Backup of one LXD custom storage volume (`lxd-volume:POOL/NAME`): its config, description,
 * content type (filesystem or block) and snapshot names as metadata, and one stream,
 * `volume-export`: LXD's own volume backup
 * (`POST /1.0/storage-pools/{pool}/volumes/custom/{name}/backups`, uncompressed), with the
 * volume's snapshots unless `snapshots: false` (LXD's `volume_only`), exactly as LXD does by
 * default. The LXD-side backup is always deleted afterwards (export.ts). A filesystem volume on a
 * `dir` pool this agent sees is read in the pool's directory instead, as tree streams (`tree`,
 * `snapshot/NAME`; host-tree.ts), and restored the same way (volume-restore.ts).
 *
 * A volume is captured live: LXD copies it while instances that use it keep running
 * (crash-consistent). `pause`/`stop` would have to hold those instances; they are refused rather
 * than silently ignored.
 */
import { join } from 'node:path';
import { TargetNotFound, ValidationError } from '../../../kernel/errors';
import { splitVolumeName } from '../../../kernel/platforms/lxd-volume';
import type { BackupOutcome, BackupSink, DriverContext } from '../../core/driver';
import { checkAborted } from '../../core/driver-streams';
import type { LxdBackupOptions } from './backup';
import { exportBackup, optimizedOn } from './export';
import type { Engine } from './instance';
import { MAIN_TREE, poolDir, snapshotTree, volumeDirs, writeTreeOf } from './host-tree';
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

  const host =
    sink.writeTree && !metadata.optimizedStorage && found.content_type === 'filesystem'
      ? await volumeDirs(engine, await poolDir(engine, pool, ctx, 'read'), volume)
      : undefined;
  if (host) {
    // In the pool's directory: files unchanged since the last point are not read again.
    metadata.read = 'host';
    metadata.trees = [];
    for (const snapshot of metadata.snapshots) {
      checkAborted(ctx, `backup of lxd-volume:${name}`);
      ctx.phase(`reading snapshot ${snapshot.name}`);
      const dir = join(host.snapshots, snapshot.name);
      metadata.trees.push(await writeTreeOf(sink, snapshotTree(snapshot.name), dir, ctx));
    }
    ctx.phase('reading volume');
    metadata.trees.push(await writeTreeOf(sink, MAIN_TREE, host.dir, ctx));
    ctx.phase('done');
    return {
      metadata: metadata as unknown as Record<string, unknown>,
      summary: {
        pool,
        optimized: false,
        contentType: found.content_type,
        snapshots: metadata.snapshots.length,
        read: 'host',
        bytes: metadata.trees.reduce((n, t) => n + t.bytesRead, 0),
      },
    };
  }
  metadata.read = 'engine-api';
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
