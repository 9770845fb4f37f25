/**
 * LXD's own backup of an instance or a custom volume, streamed into a sink: what the instance and
 * volume backups share.
 *
 * Protocol: `POST {collection}` (`/1.0/instances/{name}/backups` or
 * `/1.0/storage-pools/{pool}/volumes/custom/{name}/backups`) makes LXD write the backup whole
 * under /var/lib/lxd/backups/ (an operation to wait for); `GET {collection}/{b}/export` then
 * serves it. Always `compression_algorithm: none`, so the chunk store can deduplicate it.
 *
 * The LXD-side backup is deleted in `finally` whatever happens (a failing sink, an abandoned
 * job), and it is created with `expires_at` a day ahead so LXD removes it itself should the agent
 * die first.
 */
import { randomBytes } from 'node:crypto';
import { ValidationError } from '../../../kernel/errors';
import { LogEvent } from '../../../kernel/logger';
import type { BackupSink, DriverContext, StoredStream } from '../../core/driver';
import { consumeStream } from '../../core/driver-streams';
import { takeHold } from '../../core/holds';
import { isNotFound, translate } from './errors';
import { abortCheck, type Engine } from './instance';

/**
 * The pool drivers whose optimized backup format LXD 5.0 implements (`zfs send`, `btrfs send`);
 * every other driver (dir, lvm, ceph, cephfs) ignores `optimized_storage` and writes the plain
 * file tree or image.
 */
const OPTIMIZED_DRIVERS: ReadonlySet<string> = new Set(['btrfs', 'zfs']);

/** Whether a backup asked for optimized storage gets it on a pool with this driver. */
export function optimizedOn(
  requested: boolean | undefined,
  poolDriver: string | undefined,
): boolean {
  return requested === true && poolDriver !== undefined && OPTIMIZED_DRIVERS.has(poolDriver);
}

/**
 * An optimized point can only be imported into a pool of the same driver: refuse another one
 * before anything is read, saying what would work.
 */
export function checkOptimizedTarget(
  optimized: boolean | undefined,
  fromDriver: string | undefined,
  pool: string,
  toDriver: string,
): void {
  if (!optimized || fromDriver === toDriver) return;
  throw new ValidationError(
    `the point was made with ${fromDriver} optimized storage and can only be restored into a ${fromDriver} pool; pool ${pool} is ${toDriver} (choose another pool)`,
  );
}

/** LXD removes a forgotten backup itself after this long (the agent deletes it at once). */
const BACKUP_EXPIRY_MS = 24 * 60 * 60 * 1000;

export interface LxdExport {
  /** The backups collection: `/1.0/instances/{name}/backups` or the volume's. */
  collection: string;
  /** What is exported, for messages: `instance c1`, `custom volume default/data`. */
  what: string;
  /** Fields of the create request besides name, compression and expiry. */
  request: Record<string, unknown>;
  /** The progress phase while the export streams (`exporting instance`). */
  exportPhase: string;
  /** The stream the export becomes. */
  stream: { name: string; kind: string };
  /**
   * Runs `create` (LXD writing the backup) inside whatever hold the caller needs (a freeze or a
   * stop of the instance); the export itself reads a finished file and needs none.
   */
  hold?: (create: () => Promise<void>) => Promise<void>;
}

/** Creates LXD's backup, streams its export into `sink`, and always deletes it afterwards. */
export async function exportBackup(
  engine: Engine,
  spec: LxdExport,
  sink: BackupSink,
  ctx: DriverContext,
): Promise<StoredStream> {
  const backupName = `stowage-${randomBytes(6).toString('hex')}`;
  const backupPath = `${spec.collection}/${encodeURIComponent(backupName)}`;
  const stopped = `backup of ${spec.what}`;
  let createOperation: string | undefined;
  // Journaled before LXD is asked: a sweep after a kill deletes the backup file.
  const hold = await takeHold(ctx.holds, 'lxd', 'lxd.backup', {
    socketPath: engine.socketPath,
    project: engine.project,
    path: backupPath,
  });
  const create = async () => {
    ctx.phase('creating LXD backup');
    const answer = await engine.client
      .request('POST', spec.collection, {
        body: {
          ...spec.request,
          name: backupName,
          compression_algorithm: 'none',
          expires_at: new Date(Date.now() + BACKUP_EXPIRY_MS).toISOString(),
        },
      })
      .catch((err: unknown) => {
        throw translate(err, `creating a backup of ${spec.what}`, engine.socketPath);
      });
    createOperation = answer.operation;
    await engine.client.wait(answer.operation, abortCheck(ctx, stopped)).catch((err: unknown) => {
      throw translate(err, `creating a backup of ${spec.what}`, engine.socketPath);
    });
    createOperation = undefined;
  };
  try {
    await (spec.hold ? spec.hold(create) : create());

    ctx.phase(spec.exportPhase);
    const download = await engine.client.download(`${backupPath}/export`).catch((err: unknown) => {
      throw translate(err, `exporting backup ${backupName} of ${spec.what}`, engine.socketPath);
    });
    if (download.size !== undefined) ctx.expectBytes?.(download.size);
    return await consumeStream(download.stream, ctx, `export of ${spec.what}`, (stream) =>
      sink.writeStream(spec.stream, stream),
    );
  } finally {
    // Also when the create request itself failed: LXD may have made the backup all the same.
    if (await deleteBackup(engine, backupPath, createOperation, spec.what, ctx)) {
      await hold?.clear();
    } else {
      hold?.abandon();
    }
  }
}

/**
 * Deletes the LXD-side backup. If its creation may still be running (the job was abandoned
 * while LXD wrote it), waits for that first: LXD cannot delete a backup it is still writing.
 * A failure is logged, not thrown: the backup's own outcome matters more, and it expires anyway.
 */
async function deleteBackup(
  engine: Engine,
  path: string,
  createOperation: string | undefined,
  what: string,
  ctx: DriverContext,
): Promise<boolean> {
  try {
    if (createOperation) await engine.client.wait(createOperation).catch(() => undefined);
    await engine.client.run('DELETE', path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return true;
    ctx.log.warn(LogEvent.driverStep, {
      step: 'delete lxd backup',
      of: what,
      backup: path,
      error: translate(err, `deleting backup ${path}`, engine.socketPath),
    });
    return false;
  }
}
