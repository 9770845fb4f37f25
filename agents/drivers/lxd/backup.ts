/**
 * Backup of one LXD instance: its config, devices and profiles (with every referenced profile's
 * definition) as metadata, and its data one of two ways (the metadata's `read` says which):
 *
 * - `host` (a container on a `dir` pool whose directory this agent sees, host-tree.ts): the
 *   instance's directory as the tree stream `tree` and each snapshot's as `snapshot/NAME`, so
 *   files unchanged since the last point are not read again; the hold (freeze, stop) covers the
 *   read of the instance's directory, snapshots are read before it;
 * - `engine-api` (anything else, or optimized storage asked for), the stream `export`
 *   (lxd-backup-tar): LXD's own instance backup
 * (`POST /1.0/instances/{name}/backups`, uncompressed so the chunk store can deduplicate it),
 * streamed from `GET .../backups/{b}/export`. The export holds the instance's snapshots unless
 * `snapshots: false` (LXD's `instance_only`), and is in the pool driver's optimized format only
 * when asked and the root pool's driver has one (export.ts); the metadata says which.
 *
 * LXD first writes the backup whole under /var/lib/lxd/backups/, then serves it; export.ts
 * always deletes that LXD-side backup afterwards.
 *
 * Consistency (BackupOptions.consistency): the data is captured while LXD creates the backup, so
 * that is the only step a pause or stop has to cover; the export only reads the finished file.
 * - `live` (default): LXD copies a running container (crash-consistent; fine on `dir`).
 * - `pause`: the instance is frozen while LXD creates the backup, then thawed.
 * - `stop`: stopped while LXD creates the backup, then started again.
 * The release (thaw, start) runs in `finally`: an instance running before is running after.
 */
import { join } from 'node:path';
import { DriverError, TargetNotFound } from '../../../kernel/errors';
import type { BackupOptions, BackupOutcome, BackupSink, DriverContext } from '../../core/driver';
import { checkAborted } from '../../core/driver-streams';
import { journaled } from '../../core/holds';
import { translate } from './errors';
import { exportBackup, optimizedOn } from './export';
import { getPool } from './volume';
import {
  MAIN_TREE,
  instanceDirs,
  poolDir,
  snapshotTree,
  writeTreeOf,
  type HostDirs,
  type TreeRecord,
} from './host-tree';
import {
  EXPORT_KIND,
  EXPORT_STREAM,
  METADATA_FORMAT,
  changeState,
  getInstance,
  getProfile,
  instancePath,
  type Engine,
  type LxdBackupMetadata,
  type LxdInstance,
  type LxdProfile,
} from './instance';

export type LxdBackupOptions = BackupOptions;

export async function backupInstance(
  engine: Engine,
  name: string,
  sink: BackupSink,
  ctx: DriverContext,
  options: LxdBackupOptions = {},
): Promise<BackupOutcome> {
  const consistency = options.consistency ?? 'live';
  const instanceOnly = options.snapshots === false;

  ctx.phase('reading instance config');
  const instance = await getInstance(engine, name);
  if (!instance) throw new TargetNotFound(`lxd:${name} not found: no instance named ${name}`);
  const profileDefinitions = await readProfiles(engine, instance);
  const rootPool = rootPoolOf(instance);
  const rootPoolDriver = rootPool ? (await getPool(engine, rootPool))?.driver : undefined;
  const optimizedStorage = optimizedOn(options.optimizedStorage, rootPoolDriver);
  if (options.optimizedStorage && !optimizedStorage) {
    ctx.phase(
      `pool ${rootPool ?? '?'} (${rootPoolDriver ?? 'unknown'}) has no optimized storage: plain export`,
    );
  }
  const { names: snapshots, expiry: snapshotExpiry } = instanceOnly
    ? { names: [], expiry: {} }
    : await readSnapshots(engine, name);
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
    rootPool,
    rootPoolDriver,
    instanceOnly,
    snapshots,
    snapshotExpiry,
    optimizedStorage,
    consistency,
  };
  checkAborted(ctx, `backup of lxd:${name}`);

  const host =
    sink.writeTree && !optimizedStorage && instance.type === 'container'
      ? await instanceDirs(engine, await poolDir(engine, rootPool, ctx, 'read'), name)
      : undefined;
  if (host) {
    // In the pool's directory: files unchanged since the last point are not read again.
    metadata.read = 'host';
    metadata.trees = await backupTrees(engine, instance, snapshots, host, sink, ctx, consistency);
    ctx.phase('done');
    return {
      metadata: metadata as unknown as Record<string, unknown>,
      summary: {
        type: instance.type,
        state: instance.status.toLowerCase(),
        profiles: instance.profiles.join(','),
        snapshots: snapshots.length,
        optimized: false,
        read: 'host',
        bytes: metadata.trees.reduce((n, t) => n + t.bytesRead, 0),
      },
    };
  }
  metadata.read = 'engine-api';
  const stored = await exportBackup(
    engine,
    {
      collection: `${instancePath(name)}/backups`,
      what: `instance ${name}`,
      request: { instance_only: instanceOnly, optimized_storage: optimizedStorage },
      exportPhase: 'exporting instance',
      stream: { name: EXPORT_STREAM, kind: EXPORT_KIND },
      hold: (create) => withConsistency(engine, instance, consistency, ctx, create),
    },
    sink,
    ctx,
  );
  ctx.phase('done');
  return {
    metadata: metadata as unknown as Record<string, unknown>,
    summary: {
      type: instance.type,
      state: instance.status.toLowerCase(),
      profiles: instance.profiles.join(','),
      snapshots: snapshots.length,
      optimized: optimizedStorage,
      bytes: stored.size,
    },
  };
}

/**
 * The instance's directory as the tree stream `tree` and each snapshot's as `snapshot/NAME`.
 * Snapshots do not change: they are read first, outside the hold, which covers only the
 * instance's own directory (frozen or stopped as asked, like LXD's backup creation).
 */
async function backupTrees(
  engine: Engine,
  instance: LxdInstance,
  snapshots: string[],
  host: HostDirs,
  sink: BackupSink,
  ctx: DriverContext,
  consistency: 'live' | 'pause' | 'stop',
): Promise<TreeRecord[]> {
  const trees: TreeRecord[] = [];
  for (const snapshot of snapshots) {
    checkAborted(ctx, `backup of lxd:${instance.name}`);
    ctx.phase(`reading snapshot ${snapshot}`);
    const dir = join(host.snapshots, snapshot);
    trees.push(await writeTreeOf(sink, snapshotTree(snapshot), dir, ctx));
  }
  await withConsistency(engine, instance, consistency, ctx, async () => {
    ctx.phase('reading instance');
    trees.push(await writeTreeOf(sink, MAIN_TREE, host.dir, ctx));
  });
  return trees;
}

/**
 * The instance's snapshots, oldest first (what an export with them holds), with the expiry of
 * those that have one: LXD's import drops it, so the restore puts it back.
 */
async function readSnapshots(
  engine: Engine,
  name: string,
): Promise<{ names: string[]; expiry: Record<string, string> }> {
  let list: Array<{ name: string; expires_at?: string }>;
  try {
    list = await engine.client.get(`${instancePath(name)}/snapshots?recursion=1`);
  } catch (err) {
    throw translate(err, `listing snapshots of instance ${name}`, engine.socketPath);
  }
  const expiry: Record<string, string> = {};
  for (const s of list) {
    if (s.expires_at && !s.expires_at.startsWith('0001-')) expiry[s.name] = s.expires_at;
  }
  return { names: list.map((s) => s.name), expiry };
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
export function rootPoolOf(instance: LxdInstance): string | undefined {
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
  // Journaled before the instance is touched: a sweep after a kill thaws or starts it.
  const record = {
    socketPath: engine.socketPath,
    project: engine.project,
    instance: instance.name,
    undo: release,
  };
  const undo = await journaled(ctx.holds, 'lxd', 'lxd.state', record, async () => {
    await changeState(engine, instance.name, hold);
    return async () => {
      try {
        await changeState(engine, instance.name, release);
      } catch (err) {
        // Not a TransientError even when lxd is unreachable (it restarted): a retry of the task
        // would find the instance stopped or frozen and take that for its owner's choice. The
        // journal keeps the hold, and the agent's sweep puts the instance back once lxd answers.
        const said = err instanceof Error ? err.message : String(err);
        throw new DriverError(
          `${said}; instance ${instance.name} was running before the backup and is ${
            release === 'start' ? 'stopped' : 'frozen'
          } now: the agent ${release === 'start' ? 'starts' : 'thaws'} it again once lxd answers ` +
            `(or run \`lxc start ${instance.name}\`)`,
          { cause: err },
        );
      }
    };
  });
  try {
    await capture();
  } finally {
    ctx.phase(consistency === 'pause' ? 'thawing instance' : 'starting instance');
    await undo();
  }
}
