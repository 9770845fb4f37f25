/**
 * Backup of one LXD instance: its config, devices and profiles (with every referenced profile's
 * definition) as metadata, and one stream, `export` (lxd-backup-tar): LXD's own instance backup
 * (`POST /1.0/instances/{name}/backups`, uncompressed so the chunk store can deduplicate it),
 * streamed from `GET .../backups/{b}/export`.
 *
 * LXD first writes the backup whole under /var/lib/lxd/backups/, then serves it; that LXD-side
 * backup is deleted in `finally` whatever happens (a failing sink, an abandoned job), and it is
 * created with `expires_at` a day ahead so LXD removes it itself should the agent die first.
 *
 * Consistency (BackupOptions.consistency): the data is captured while LXD creates the backup, so
 * that is the only step a pause or stop has to cover; the export only reads the finished file.
 * - `live` (default): LXD copies a running container (crash-consistent; fine on `dir`).
 * - `pause`: the instance is frozen while LXD creates the backup, then thawed.
 * - `stop`: stopped while LXD creates the backup, then started again.
 * The release (thaw, start) runs in `finally`: an instance running before is running after.
 */
import { randomBytes } from 'node:crypto';
import { TargetNotFound } from '../../../functions/shared/errors';
import { LogEvent } from '../../../functions/shared/logger';
import type { BackupOptions, BackupOutcome, BackupSink, DriverContext } from '../../core/driver';
import { checkAborted, consumeStream } from '../../core/driver-streams';
import { isNotFound, translate } from './errors';
import {
  EXPORT_KIND,
  EXPORT_STREAM,
  METADATA_FORMAT,
  abortCheck,
  changeState,
  getInstance,
  getProfile,
  instancePath,
  type Engine,
  type LxdBackupMetadata,
  type LxdInstance,
  type LxdProfile,
} from './instance';

/** LXD removes a forgotten backup itself after this long (the agent deletes it at once). */
const BACKUP_EXPIRY_MS = 24 * 60 * 60 * 1000;

export interface LxdBackupOptions extends BackupOptions {
  /** Also capture the instance's snapshots (default false: the instance alone). */
  includeSnapshots?: boolean;
}

export async function backupInstance(
  engine: Engine,
  name: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: LxdBackupOptions = {},
): Promise<BackupOutcome> {
  const consistency = options.consistency ?? 'live';
  const instanceOnly = !options.includeSnapshots;

  ctx.phase('reading instance config');
  const instance = await getInstance(engine, name);
  if (!instance) throw new TargetNotFound(`lxd:${name} not found: no instance named ${name}`);
  const profileDefinitions = await readProfiles(engine, instance);
  const metadata: LxdBackupMetadata = {
    format: METADATA_FORMAT,
    project: engine.project,
    name: instance.name,
    type: instance.type,
    architecture: instance.architecture,
    status: instance.status,
    config: instance.config,
    devices: instance.devices,
    profiles: instance.profiles,
    expandedConfig: instance.expanded_config,
    expandedDevices: instance.expanded_devices,
    profileDefinitions,
    rootPool: rootPoolOf(instance),
    instanceOnly,
    consistency,
  };
  checkAborted(ctx, `backup of lxd:${name}`);

  const backupName = `stowage-${randomBytes(6).toString('hex')}`;
  const backupPath = `${instancePath(name)}/backups/${backupName}`;
  let createOperation: string | undefined;
  try {
    await withConsistency(engine, instance, consistency, ctx, async () => {
      ctx.phase('creating LXD backup');
      const answer = await engine.client
        .request('POST', `${instancePath(name)}/backups`, {
          body: {
            name: backupName,
            compression_algorithm: 'none',
            instance_only: instanceOnly,
            optimized_storage: false,
            expires_at: new Date(Date.now() + BACKUP_EXPIRY_MS).toISOString(),
          },
        })
        .catch((err: unknown) => {
          throw translate(err, `creating a backup of instance ${name}`, engine.socketPath);
        });
      createOperation = answer.operation;
      await engine.client
        .wait(answer.operation, abortCheck(ctx, `backup of lxd:${name}`))
        .catch((err: unknown) => {
          throw translate(err, `creating a backup of instance ${name}`, engine.socketPath);
        });
      createOperation = undefined;
    });

    ctx.phase('exporting instance');
    const download = await engine.client.download(`${backupPath}/export`).catch((err: unknown) => {
      throw translate(err, `exporting backup ${backupName} of instance ${name}`, engine.socketPath);
    });
    if (download.size !== undefined) ctx.expectBytes?.(download.size);
    const stored = await consumeStream(download.stream, ctx, `export of lxd:${name}`, (stream) =>
      sink.writeStream({ name: EXPORT_STREAM, kind: EXPORT_KIND }, stream),
    );
    ctx.phase('done');
    return {
      metadata: metadata as unknown as Record<string, unknown>,
      summary: {
        type: instance.type,
        state: instance.status.toLowerCase(),
        profiles: instance.profiles.join(','),
        snapshots: instanceOnly ? 0 : (instance.snapshots?.length ?? 0),
        bytes: stored.size,
      },
    };
  } finally {
    await deleteBackup(engine, name, backupName, createOperation, ctx);
  }
}

/** Every profile the instance uses, as it is defined now. */
async function readProfiles(engine: Engine, instance: LxdInstance): Promise<LxdProfile[]> {
  const definitions: LxdProfile[] = [];
  for (const profile of instance.profiles) {
    const found = await getProfile(engine, profile);
    if (!found) continue;
    definitions.push({
      name: found.name,
      description: found.description,
      config: found.config,
      devices: found.devices,
    });
  }
  return definitions;
}

/** The storage pool of the root disk device (`path: /`), from the expanded devices. */
function rootPoolOf(instance: LxdInstance): string | undefined {
  const devices = instance.expanded_devices ?? {};
  for (const device of Object.values(devices)) {
    if (device.type === 'disk' && device.path === '/' && device.pool) return device.pool;
  }
  return undefined;
}

/**
 * Runs `capture` with the instance frozen or stopped as asked, and puts it back as it was in
 * `finally`. A failing release wins over the capture's error: the workload being down is what
 * the operator must hear about.
 */
async function withConsistency(
  engine: Engine,
  instance: LxdInstance,
  consistency: 'live' | 'pause' | 'stop',
  ctx: DriverContext,
  capture: () => Promise<void>,
): Promise<void> {
  const running = instance.status === 'Running';
  if (consistency === 'live' || !running) return capture();
  const [hold, release] =
    consistency === 'pause' ? (['freeze', 'unfreeze'] as const) : (['stop', 'start'] as const);
  ctx.phase(consistency === 'pause' ? 'freezing instance' : 'stopping instance');
  await changeState(engine, instance.name, hold);
  try {
    await capture();
  } finally {
    ctx.phase(consistency === 'pause' ? 'thawing instance' : 'starting instance');
    await changeState(engine, instance.name, release);
  }
}

/**
 * Deletes the LXD-side backup. If its creation may still be running (the job was abandoned
 * while LXD wrote it), waits for that first: LXD cannot delete a backup it is still writing.
 * A failure is logged, not thrown: the backup's own outcome matters more, and it expires anyway.
 */
async function deleteBackup(
  engine: Engine,
  name: string,
  backupName: string,
  createOperation: string | undefined,
  ctx: DriverContext,
): Promise<void> {
  const path = `${instancePath(name)}/backups/${backupName}`;
  try {
    if (createOperation) await engine.client.wait(createOperation).catch(() => undefined);
    await engine.client.run('DELETE', path);
  } catch (err) {
    if (isNotFound(err)) return;
    const error = translate(err, `deleting backup ${backupName}`, engine.socketPath);
    ctx.log.warn(LogEvent.driverStep, {
      step: 'delete lxd backup',
      instance: name,
      backup: backupName,
      error,
    });
  }
}
