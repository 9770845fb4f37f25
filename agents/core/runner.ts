/**
 * Runs one task the agent received: a backup (driver → repository → manifest), a restore
 * (manifest → repository → driver), a verify (manifest → every chunk read and checked) or a
 * snapshot operation (the driver's SnapshotOps, on the engine alone). The result is what the
 * agent sends with SendTaskSuccess.
 *
 * A backup that fails stores no manifest, so no point exists; the chunks it did store stay in the
 * repository (their packs are flushed on the way out), so the retried task re-uses them.
 */
import type { Driver, DriverContext } from './driver';
import type { HoldTaker } from './holds';
import { PointReader, PointWriter, readManifest, MANIFEST_VERSION, type Manifest } from './points';
import type { ProgressReporter } from './progress';
import type { Repository } from '../repo/repository';
import { ObjectNotFound } from '../store/store';
import { parseTargetKey } from '../../kernel/targets';
import { expiresAt } from '../../kernel/snapshots';
import { DriverError, PointNotFound, UnknownTask, Unsupported } from '../../kernel/errors';
import type { Logger } from '../../kernel/logger';
import { LogEvent } from '../../kernel/logger';
import type {
  AgentTask,
  BackupResult,
  BackupTask,
  RestoreResult,
  RestoreTask,
  SnapshotResult,
  SnapshotTask,
  VerifyResult,
  VerifyTask,
} from '../../statemachines/contracts';

export interface RunnerDeps {
  agent: string;
  drivers: ReadonlyMap<string, Driver>;
  /** The repository, opened once per agent; refreshed at the start of every task. */
  repository(): Promise<Repository>;
  log: Logger;
  /**
   * The agent's hold journal (holds.ts); each task's drivers record their holds in it under the
   * task's job. Absent: nothing is journaled (unit tests).
   */
  holds?: { taker(jobId?: string): HoldTaker };
}

export interface TaskRun {
  progress: ProgressReporter;
  signal: AbortSignal;
}

function driverFor(deps: RunnerDeps, target: string): { driver: Driver; name: string } {
  const ref = parseTargetKey(target);
  const driver = deps.drivers.get(ref.platform);
  if (!driver) {
    throw new DriverError(
      `agent ${deps.agent} has no ${ref.platform} driver (it serves: ${[...deps.drivers.keys()].join(', ') || 'nothing'})`,
    );
  }
  return { driver, name: ref.name };
}

function context(run: TaskRun, log: Logger, holds?: HoldTaker): DriverContext {
  return {
    ...(holds ? { holds } : {}),
    log,
    signal: run.signal,
    phase: (text) => {
      log.info(LogEvent.driverStep, { phase: text });
      run.progress.setPhase(text);
    },
    expectBytes: (total) => run.progress.expect(total),
  };
}

async function openRepository(deps: RunnerDeps): Promise<Repository> {
  const repo = await deps.repository();
  await repo.refresh();
  return repo;
}

/**
 * Runs any task by its kind. The switch is exhaustive: a new kind in contracts.ts is a compile
 * error here until it is handled. A message from a newer control plane (or a forged one) with a
 * kind this agent does not know fails with UnknownTask before anything is touched.
 */
export function runTask(deps: RunnerDeps, task: AgentTask, run: TaskRun): Promise<unknown> {
  switch (task.kind) {
    case 'BACKUP':
      return runBackup(deps, task, run);
    case 'RESTORE':
      return runRestore(deps, task, run);
    case 'VERIFY':
      return runVerify(deps, task, run);
    case 'SNAPSHOT':
      return runSnapshot(deps, task, run);
    default:
      return Promise.reject(unknownKind(task));
  }
}

function unknownKind(task: never): Error {
  const kind = JSON.stringify((task as { kind?: unknown }).kind);
  return new UnknownTask(
    `this agent cannot run a task of kind ${kind} (it runs BACKUP, RESTORE, VERIFY and SNAPSHOT): upgrade the agent to the control plane's version`,
  );
}

export async function runBackup(
  deps: RunnerDeps,
  task: BackupTask,
  run: TaskRun,
): Promise<BackupResult> {
  const log = deps.log.child({
    jobId: task.jobId,
    target: task.target,
    recoveryPointId: task.recoveryPointId,
  });
  const { driver, name } = driverFor(deps, task.target);
  const startedAt = new Date().toISOString();
  const repo = await openRepository(deps);
  const writer = repo.writer();
  run.progress.track(writer.stats);
  const sink = new PointWriter(writer, (n) => run.progress.addBytes(n));
  let outcome;
  try {
    outcome = await driver.backup(
      name,
      sink,
      context(run, log, deps.holds?.taker(task.jobId)),
      task.options ?? {},
    );
    run.progress.setPhase('storing the last pack');
    await writer.flush();
  } catch (err) {
    // Keep what was chunked so far: the retry finds it in the repository.
    await writer
      .flush()
      .catch((flushErr: unknown) => log.warn('agent.backup.flush_failed', { error: flushErr }));
    throw err;
  }
  run.progress.setPhase('writing manifest');
  const completedAt = new Date().toISOString();
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    recoveryPointId: task.recoveryPointId,
    jobId: task.jobId,
    target: task.target,
    agent: deps.agent,
    startedAt,
    completedAt,
    streams: sink.streams,
    metadata: outcome.metadata,
  };
  const manifestKey = await repo.saveManifest(task.recoveryPointId, manifest);
  return {
    recoveryPointId: task.recoveryPointId,
    manifestKey,
    startedAt,
    completedAt,
    bytesRead: writer.stats.bytesRead,
    bytesNew: writer.stats.bytesNew,
    bytesStored: writer.stats.bytesStored,
    streams: sink.streams.map((s) => ({ name: s.name, kind: s.kind, size: s.size })),
    summary: outcome.summary,
  };
}

/** The repository and a point's manifest, with the point's size announced for the ETA. */
async function openPoint(
  deps: RunnerDeps,
  recoveryPointId: string,
  run: TaskRun,
): Promise<{ repo: Repository; manifest: Manifest }> {
  run.progress.setPhase('reading manifest');
  const repo = await openRepository(deps);
  const manifest = await manifestOf(repo, recoveryPointId);
  run.progress.expect(manifest.streams.reduce((n, s) => n + s.size, 0));
  return { repo, manifest };
}

async function manifestOf(repo: Repository, recoveryPointId: string): Promise<Manifest> {
  try {
    return await readManifest(repo, recoveryPointId);
  } catch (err) {
    if (err instanceof ObjectNotFound) {
      throw new PointNotFound(`recovery point ${recoveryPointId} has no manifest in the store`, {
        cause: err,
      });
    }
    throw err;
  }
}

export async function runRestore(
  deps: RunnerDeps,
  task: RestoreTask,
  run: TaskRun,
): Promise<RestoreResult> {
  const log = deps.log.child({
    jobId: task.jobId,
    target: task.target,
    recoveryPointId: task.recoveryPointId,
  });
  const { driver, name } = driverFor(deps, task.target);
  const startedAt = new Date().toISOString();
  const { repo, manifest } = await openPoint(deps, task.recoveryPointId, run);
  const reader = new PointReader(repo, manifest, (n) => run.progress.addBytes(n));
  const outcome = await driver.restore(
    manifest.metadata,
    reader,
    { ...(task.options ?? {}), name, inPlace: task.inPlace },
    context(run, log, deps.holds?.taker(task.jobId)),
  );
  return {
    restoredTarget: outcome.restoredTarget,
    startedAt,
    completedAt: new Date().toISOString(),
    bytesWritten: run.progress.total,
  };
}

export async function runVerify(
  deps: RunnerDeps,
  task: VerifyTask,
  run: TaskRun,
): Promise<VerifyResult> {
  const startedAt = new Date().toISOString();
  const { repo, manifest } = await openPoint(deps, task.recoveryPointId, run);
  let chunks = 0;
  for (const stream of manifest.streams) {
    if (run.signal.aborted) throw new DriverError('verify abandoned: the task token expired');
    run.progress.setPhase(`verifying ${stream.name}`);
    await repo.verifyStream(
      stream,
      (n) => run.progress.addBytes(n),
      `recovery point ${task.recoveryPointId}, `,
    );
    chunks += stream.chunks.length;
  }
  // Bad objects under index/ were skipped when the repository was read: say so with the result.
  const warnings = repo.badIndexes().map((bad) => `skipped a bad index object ${bad}`);
  return {
    startedAt,
    completedAt: new Date().toISOString(),
    bytesVerified: run.progress.total,
    chunks,
    streams: manifest.streams.length,
    ...(warnings.length > 0 ? { warnings } : {}),
  };
}

/**
 * One snapshot operation on the target's engine. Expiries become times here, by this host's
 * clock (the engine's, which prunes by it too). The driver deletes expired snapshots first and
 * reports them in `pruned`.
 */
export async function runSnapshot(
  deps: RunnerDeps,
  task: SnapshotTask,
  run: TaskRun,
): Promise<SnapshotResult> {
  const log = deps.log.child({ jobId: task.jobId, target: task.target, action: task.action });
  const { driver, name } = driverFor(deps, task.target);
  const ops = driver.snapshots;
  if (!ops) {
    throw new Unsupported(
      `${task.target} has no local snapshots: the ${driver.platform} driver keeps none`,
    );
  }
  const ctx = context(run, log, deps.holds?.taker(task.jobId));
  const startedAt = new Date();
  const { args } = task;
  const base = { action: task.action, target: task.target, startedAt: startedAt.toISOString() };
  const done = (result: Partial<SnapshotResult>, pruned: string[]): SnapshotResult => ({
    ...base,
    ...result,
    pruned,
    completedAt: new Date().toISOString(),
  });
  const snapshotName = (): string => {
    if (!args.snapshot) throw new DriverError(`a snapshot ${task.action} task names no snapshot`);
    return args.snapshot;
  };
  run.progress.setPhase('deleting expired snapshots');
  const pruned = await ops.pruneExpired(name, ctx);
  switch (task.action) {
    case 'create': {
      const snapshot = await ops.create(
        name,
        {
          pattern: args.pattern ?? 'snap%d',
          ...(args.expiry !== undefined ? { expiresAt: expiresAt(args.expiry, startedAt) } : {}),
          stateful: args.stateful ?? false,
        },
        ctx,
      );
      return done({ snapshot }, pruned);
    }
    case 'expire': {
      const when = expiresAt(args.expiry ?? 'never', new Date());
      return done({ snapshot: await ops.setExpiry(name, snapshotName(), when, ctx) }, pruned);
    }
    case 'delete': {
      await ops.delete(name, snapshotName(), ctx);
      return done({ deleted: snapshotName() }, pruned);
    }
    case 'restore':
      return done({ snapshot: await ops.restore(name, snapshotName(), ctx) }, pruned);
    case 'schedule': {
      const every = args.every ?? 'none';
      const schedule =
        every === 'none'
          ? null
          : {
              every,
              ...(args.expiry !== undefined ? { expiry: args.expiry } : {}),
              ...(args.pattern !== undefined ? { pattern: args.pattern } : {}),
              ...(args.stopped !== undefined ? { stopped: args.stopped } : {}),
            };
      return done({ schedule: await ops.schedule(name, schedule, ctx) }, pruned);
    }
    default:
      throw new DriverError(`unknown snapshot action ${String(task.action)}`);
  }
}
