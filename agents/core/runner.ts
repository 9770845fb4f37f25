/**
 * Runs one task the agent received: a backup (driver → repository → manifest), a restore
 * (manifest → repository → driver), a verify (manifest → every chunk read and checked) or a
 * snapshot operation (the driver's SnapshotOps, on the engine alone). The result is what the
 * agent sends with SendTaskSuccess.
 *
 * A backup that fails, or whose job is cancelled, stores no manifest, so no point exists; the chunks it did store stay in the
 * repository (their packs are flushed on the way out), so the retried task re-uses them.
 */
import type { Driver, DriverContext } from './driver';
import { takeHold, type HoldTaker } from './holds';
import {
  PointReader,
  PointWriter,
  readManifest,
  MANIFEST_VERSION,
  type Manifest,
  type ParentPoint,
} from './points';
import type { ParentRegistry } from './parents';
import { listTree, restoreFiles } from './tree/files';
import type { ProgressReporter } from './progress';
import type { Repository } from '../repo/repository';
import { Lease, markGarbage, sweepGarbage, type LeaseInfo } from '../repo/gc';
import type { StreamRecord } from '../repo/types';
import { ObjectNotFound } from '../store/store';
import { parseTargetKey } from '../../kernel/targets';
import { expiresAt } from '../../kernel/snapshots';
import { pointPrefix } from '../../kernel/object-layout';
import {
  Cancelled,
  DriverError,
  PointNotFound,
  TransientError,
  UnknownTask,
  Unsupported,
  type ErrorRecord,
} from '../../kernel/errors';
import type { Logger } from '../../kernel/logger';
import { LogEvent } from '../../kernel/logger';
import type {
  AgentTask,
  BackupResult,
  BackupTask,
  PruneMarkResult,
  PruneSweepResult,
  PruneTask,
  RestoreResult,
  RestoreTask,
  RestoreTestOutcome,
  RestoreTestRequest,
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
  /**
   * How long a task's repository lease lives without renewal (renewed every third of it);
   * garbage collection treats a task whose lease lapsed as dead (repo/gc.ts). Default 10 min.
   */
  leaseTtlMs?: number;
  /**
   * The last point this agent made of each target (parents.ts): tree streams take unchanged
   * files' chunks from it. Absent: every backup reads every file.
   */
  parents?: ParentRegistry;
  /**
   * The trees this agent serves on its host (`--paths`): file restores (`--file --dest`) write
   * only inside them. Absent: every path, as for `path:` targets.
   */
  paths?: readonly string[];
}

export interface TaskRun {
  progress: ProgressReporter;
  signal: AbortSignal;
  /**
   * The task's logger (the worker's, which also keeps the lines for the job's log:
   * task-log.ts); the runner's `deps.log` when absent.
   */
  log?: Logger;
  /** See DriverContext.pointOfNoReturn (the worker checks the job and its token). */
  pointOfNoReturn?: () => Promise<void>;
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

/** The logger of one task: the worker's for it, which keeps the job's log lines too. */
const taskLogger = (deps: RunnerDeps, run: TaskRun): Logger => run.log ?? deps.log;

/** Sets the task's phase and logs it (a step of the job's log). */
function phase(run: TaskRun, log: Logger, text: string): void {
  log.info(LogEvent.driverStep, { phase: text });
  run.progress.setPhase(text);
}

function context(run: TaskRun, log: Logger, holds?: HoldTaker): DriverContext {
  return {
    ...(holds ? { holds } : {}),
    ...(run.pointOfNoReturn ? { pointOfNoReturn: run.pointOfNoReturn } : {}),
    log,
    signal: run.signal,
    phase: (text) => phase(run, log, text),
    expectBytes: (total) => run.progress.expect(total),
  };
}

/**
 * The repository under a lease: the lease is written BEFORE the index and the garbage-collection
 * marks are read (repo/gc.ts, step 1), so a sweep either waits for this task or this task saw
 * its mark. The caller ends the lease when the task ends, whatever the outcome.
 */
async function openRepository(
  deps: RunnerDeps,
  info: Omit<LeaseInfo, 'agent'>,
  log: Logger,
): Promise<{ repo: Repository; lease: Lease }> {
  const repo = await deps.repository();
  const lease = await Lease.take(
    repo.store,
    { ...info, agent: deps.agent },
    {
      ...(deps.leaseTtlMs !== undefined ? { ttlMs: deps.leaseTtlMs } : {}),
      onRenewError: (err) => log.warn('agent.lease.renew_failed', { error: err }),
    },
  );
  try {
    await repo.refresh();
  } catch (err) {
    await lease.end();
    throw err;
  }
  return { repo, lease };
}

/**
 * The commit check (repo/gc.ts, step 4): the lease never lapsed, and every chunk of the point
 * is still stored. Refuses with a TransientError, so the workflow retries the backup, and the
 * retry stores again what garbage collection removed.
 */
async function checkChunksStored(
  repo: Repository,
  lease: Lease,
  recoveryPointId: string,
  streams: readonly StreamRecord[],
): Promise<void> {
  await lease.confirm(`recovery point ${recoveryPointId} is not committed`);
  await repo.refresh();
  for (const stream of streams) {
    for (const chunk of stream.chunks) {
      if (!repo.index.has(chunk.id)) {
        throw new TransientError(
          `recovery point ${recoveryPointId} is not committed: chunk ${chunk.id} of stream ${stream.name} is no longer stored (garbage collection removed it while the backup ran); the retry stores it again`,
        );
      }
    }
  }
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
    case 'PRUNE':
      return runPrune(deps, task, run);
    default:
      return Promise.reject(unknownKind(task));
  }
}

function unknownKind(task: never): Error {
  const kind = JSON.stringify((task as { kind?: unknown }).kind);
  return new UnknownTask(
    `this agent cannot run a task of kind ${kind} (it runs BACKUP, RESTORE, VERIFY, SNAPSHOT and PRUNE): upgrade the agent to the control plane's version`,
  );
}

export async function runBackup(
  deps: RunnerDeps,
  task: BackupTask,
  run: TaskRun,
): Promise<BackupResult> {
  const log = taskLogger(deps, run).child({
    jobId: task.jobId,
    target: task.target,
    recoveryPointId: task.recoveryPointId,
  });
  const { driver, name } = driverFor(deps, task.target);
  const startedAt = new Date().toISOString();
  const { repo, lease } = await openRepository(
    deps,
    { jobId: task.jobId, kind: task.kind, recoveryPointId: task.recoveryPointId },
    log,
  );
  try {
    return await backupUnderLease(deps, task, run, { repo, lease, driver, name, startedAt, log });
  } finally {
    await lease.end();
  }
}

async function backupUnderLease(
  deps: RunnerDeps,
  task: BackupTask,
  run: TaskRun,
  {
    repo,
    lease,
    driver,
    name,
    startedAt,
    log,
  }: {
    repo: Repository;
    lease: Lease;
    driver: Driver;
    name: string;
    startedAt: string;
    log: Logger;
  },
): Promise<BackupResult> {
  const writer = repo.writer();
  run.progress.track(writer.stats);
  const parent = task.options?.fullRead ? undefined : await parentOf(deps, repo, task.target, log);
  const sink = new PointWriter(writer, (n) => run.progress.addBytes(n), parent);
  let outcome;
  try {
    outcome = await driver.backup(
      name,
      sink,
      context(run, log, deps.holds?.taker(task.jobId)),
      task.options ?? {},
    );
    phase(run, log, 'storing the last pack');
    await writer.flush();
  } catch (err) {
    // Keep what was chunked so far: the retry finds it in the repository.
    await writer
      .flush()
      .catch((flushErr: unknown) => log.warn('agent.backup.flush_failed', { error: flushErr }));
    throw err;
  }
  phase(run, log, 'writing manifest');
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
  await checkChunksStored(repo, lease, task.recoveryPointId, sink.streams);
  // A cancelled job leaves no manifest: none is written after the cancel reached the task, and
  // one written as it came is removed (the chunks stay for the garbage collection to sweep).
  throwIfAborted(run.signal);
  const packListKey = await repo.savePackList(task.recoveryPointId, sink.streams);
  const manifestKey = await repo.saveManifest(task.recoveryPointId, manifest);
  if (run.signal.aborted) {
    await repo.store
      .deletePrefix(pointPrefix(task.recoveryPointId))
      .catch((err: unknown) => log.warn('agent.backup.manifest_not_removed', { error: err }));
    throwIfAborted(run.signal);
  }
  // A stall between the check and the manifest longer than the ttl: a sweep may have run in it.
  await lease.confirm(`recovery point ${task.recoveryPointId} is not committed`);
  await deps.parents
    ?.set(task.target, task.recoveryPointId)
    .catch((err: unknown) => log.warn('agent.backup.parent_not_recorded', { error: err }));
  return {
    recoveryPointId: task.recoveryPointId,
    manifestKey,
    packListKey,
    startedAt,
    completedAt,
    bytesRead: writer.stats.bytesRead,
    bytesNew: writer.stats.bytesNew,
    bytesStored: writer.stats.bytesStored,
    streams: sink.streams.map((s) => ({ name: s.name, kind: s.kind, size: s.size })),
    summary: outcome.summary,
    ...(outcome.failures?.length ? { failures: outcome.failures } : {}),
  };
}

function throwIfAborted(signal: AbortSignal): void {
  if (!signal.aborted) return;
  const reason: unknown = signal.reason;
  throw reason instanceof Error ? reason : new Cancelled('the task was stopped');
}

/**
 * The previous point of the target that this agent made, if its manifest still opens; anything
 * else (pruned, another store, damaged) means no parent: every file is read.
 */
async function parentOf(
  deps: RunnerDeps,
  repo: Repository,
  target: string,
  log: Logger,
): Promise<ParentPoint | undefined> {
  const id = await deps.parents?.get(target);
  if (!id) return undefined;
  try {
    const manifest = await readManifest(repo, id);
    if (manifest.target !== target) return undefined;
    return {
      recoveryPointId: id,
      streams: manifest.streams,
      metadata: manifest.metadata,
      // Read beside the backup's own work: little memory, not speed.
      read: (record) =>
        repo.readStream(record, () => undefined, `recovery point ${id}, `, { lean: true }),
    };
  } catch (err) {
    log.info('agent.backup.no_parent', { parent: id, error: err });
    return undefined;
  }
}

/** The repository and a point's manifest, with the point's size announced for the ETA. */
async function openPoint(
  deps: RunnerDeps,
  task: RestoreTask | VerifyTask,
  run: TaskRun,
): Promise<{ repo: Repository; manifest: Manifest; lease: Lease }> {
  const log = taskLogger(deps, run);
  phase(run, log, 'reading manifest');
  const { repo, lease } = await openRepository(
    deps,
    { jobId: task.jobId, kind: task.kind, recoveryPointId: task.recoveryPointId },
    log,
  );
  try {
    const manifest = await manifestOf(repo, task.recoveryPointId);
    run.progress.expect(manifest.streams.reduce((n, s) => n + s.size, 0));
    return { repo, manifest, lease };
  } catch (err) {
    await lease.end();
    throw err;
  }
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
  if (task.options?.test) return runRestoreTest(deps, task, task.options.test, run);
  const log = taskLogger(deps, run).child({
    jobId: task.jobId,
    target: task.target,
    recoveryPointId: task.recoveryPointId,
  });
  const { driver, name } = driverFor(deps, task.target);
  const startedAt = new Date().toISOString();
  const { repo, manifest, lease } = await openPoint(deps, task, run);
  const reader = new PointReader(repo, manifest, (n) => run.progress.addBytes(n));
  const options = task.options ?? {};
  const ctx = context(run, log, deps.holds?.taker(task.jobId));
  const done = (extra: Partial<RestoreResult>): RestoreResult => ({
    restoredTarget: task.target,
    startedAt,
    completedAt: new Date().toISOString(),
    bytesWritten: run.progress.total,
    ...extra,
  });
  if (options.list !== undefined) {
    // `stowage ls`: the index alone is read; nothing is written.
    phase(run, log, 'listing');
    const listing = await listTree(reader, options.list).finally(() => lease.end());
    return done({ listing });
  }
  if (options.files && options.dest !== undefined) {
    const restored = await restoreFiles(
      reader,
      options.files,
      options.dest,
      ctx,
      deps.paths,
    ).finally(() => lease.end());
    return done({ restoredTarget: `path:${options.dest}`, files: restored.files });
  }
  const outcome = await driver
    .restore(manifest.metadata, reader, { ...options, name, inPlace: task.inPlace }, ctx)
    .finally(() => lease.end());
  return done({ restoredTarget: outcome.restoredTarget });
}

/** The `{ name, message }` a failed restore test records. */
function errorRecordOf(err: unknown): ErrorRecord {
  if (err instanceof Error) return { name: err.name || 'Error', message: err.message };
  return { name: 'Error', message: String(err) };
}

/** How long a restore test's probe may run when the request does not say (seconds). */
export const DEFAULT_PROBE_TIMEOUT_SECONDS = 60;
/** What the point keeps of a probe's output: its last lines, where errors are. */
const PROBE_OUTPUT_TAIL = 2048;

/**
 * A restore test: the point restored into a sandbox (the task's target, a name the control plane
 * made unique) that the driver isolates and starts, the probe run inside it, and the sandbox
 * removed whatever happened. The sandbox is journaled as a hold before the restore creates
 * anything, so an agent killed meanwhile has its successor remove it (Driver.releaseHold).
 *
 * The outcome is the task's result whether the test passed or not (the control plane records it
 * on the point): a restore that fails is a failed test. Only a TransientError (the workflow
 * retries the task) and an abandoned task (cancelled, or its token lost) fail the task itself.
 */
async function runRestoreTest(
  deps: RunnerDeps,
  task: RestoreTask,
  test: RestoreTestRequest,
  run: TaskRun,
): Promise<RestoreResult> {
  const log = taskLogger(deps, run).child({
    jobId: task.jobId,
    target: task.target,
    recoveryPointId: task.recoveryPointId,
  });
  const { driver, name } = driverFor(deps, task.target);
  const sandbox = driver.sandbox;
  if (!sandbox) {
    throw new Unsupported(
      `restore tests run workloads; the ${driver.platform} driver cannot start what it restores`,
    );
  }
  if (task.inPlace) throw new DriverError('a restore test never restores in place');
  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  const holds = deps.holds?.taker(task.jobId);
  const hold = await takeHold(holds, driver.platform, `${driver.platform}.sandbox`, { name });
  const ctx = context(run, log, holds);
  let restoreMs: number | undefined;
  let probe: RestoreTestOutcome['probe'];
  let failure: unknown;
  try {
    const { repo, manifest, lease } = await openPoint(deps, task, run);
    const reader = new PointReader(repo, manifest, (n) => run.progress.addBytes(n));
    await driver
      .restore(manifest.metadata, reader, { name, inPlace: false, sandbox: true }, ctx)
      .finally(() => lease.end());
    restoreMs = Date.now() - started;
    if (test.probe) {
      phase(run, log, 'probing the sandbox');
      const timeout = test.probeTimeoutSeconds ?? DEFAULT_PROBE_TIMEOUT_SECONDS;
      const result = await sandbox.probe(name, test.probe, timeout, ctx);
      probe = {
        command: test.probe,
        exitCode: result.exitCode,
        output: result.output.slice(-PROBE_OUTPUT_TAIL),
        ...(result.error !== undefined ? { error: result.error } : {}),
      };
      log.info('agent.restore_test.probe', { exitCode: probe.exitCode, error: probe.error });
    }
  } catch (err) {
    failure = err;
  }
  const rtoMs = Date.now() - started;
  phase(run, log, 'removing the sandbox');
  const removed = await sandbox.remove(name, log).then(
    () => true,
    (err: unknown) => {
      log.warn('agent.restore_test.remove_failed', { error: err, next: 'the hold sweep retries' });
      return false;
    },
  );
  if (removed) await hold?.clear();
  else hold?.abandon();
  if (failure !== undefined && (failure instanceof TransientError || run.signal.aborted)) {
    throw failure instanceof Cancelled || failure instanceof TransientError
      ? failure
      : new Cancelled('restore test abandoned: the job ended or its token expired', {
          cause: failure,
        });
  }
  const passed = failure === undefined && (probe === undefined || probe.exitCode === 0);
  const outcome: RestoreTestOutcome = {
    passed,
    sandbox: task.target,
    rtoMs,
    restoreMs: restoreMs ?? rtoMs,
    ...(probe ? { probe } : {}),
    ...(failure !== undefined ? { error: errorRecordOf(failure) } : {}),
    removed,
  };
  log.info('agent.restore_test.done', { passed, rtoMs, removed });
  return {
    restoredTarget: task.target,
    startedAt,
    completedAt: new Date().toISOString(),
    bytesWritten: run.progress.total,
    test: outcome,
  };
}

export async function runVerify(
  deps: RunnerDeps,
  task: VerifyTask,
  run: TaskRun,
): Promise<VerifyResult> {
  const startedAt = new Date().toISOString();
  const { repo, manifest, lease } = await openPoint(deps, task, run);
  let chunks = 0;
  try {
    for (const stream of manifest.streams) {
      if (run.signal.aborted) throw new DriverError('verify abandoned: the task token expired');
      phase(run, taskLogger(deps, run), `verifying ${stream.name}`);
      await repo.verifyStream(
        stream,
        (n) => run.progress.addBytes(n),
        `recovery point ${task.recoveryPointId}, `,
      );
      chunks += stream.chunks.length;
    }
  } finally {
    await lease.end();
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
  const log = taskLogger(deps, run).child({
    jobId: task.jobId,
    target: task.target,
    action: task.action,
  });
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
  phase(run, log, 'deleting expired snapshots');
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
      return done(
        {
          snapshot: await ops.restore(
            name,
            snapshotName(),
            ctx,
            args.state ? { state: args.state } : {},
          ),
        },
        pruned,
      );
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

/**
 * One phase of garbage collection (repo/gc.ts). It takes no lease: it relies on none, it only
 * deletes what the leases and the manifests allow.
 */
export async function runPrune(
  deps: RunnerDeps,
  task: PruneTask,
  run: TaskRun,
): Promise<PruneMarkResult | PruneSweepResult> {
  const repo = await deps.repository();
  const ttl = deps.leaseTtlMs !== undefined ? { ttlMs: deps.leaseTtlMs } : {};
  if (task.phase === 'mark') {
    phase(
      run,
      taskLogger(deps, run),
      task.dryRun
        ? 'finding unreferenced and mostly unreferenced packs (dry run)'
        : 'repacking mostly unreferenced packs, marking unreferenced ones',
    );
    const repackBelow =
      typeof task.repackBelow === 'number' && task.repackBelow >= 0 && task.repackBelow <= 100
        ? { repackBelow: task.repackBelow / 100 }
        : {};
    const mark = await markGarbage(repo, {
      jobId: task.jobId,
      deletePoints: Array.isArray(task.deletePoints) ? task.deletePoints : [],
      dryRun: task.dryRun === true,
      ...repackBelow,
      ...ttl,
    });
    return {
      ...(mark.markId ? { markId: mark.markId } : {}),
      pointsDeleted: mark.pointsDeleted,
      pointsKept: mark.pointsKept,
      packs: mark.candidates.length - mark.repacked.length,
      bytes: mark.candidateBytes + mark.manifestBytes,
      repacked: mark.repacked.length,
      repackedBytes: mark.repackedBytes,
      repackChunks: mark.repackChunks,
      repackWritten: mark.repackWritten,
      heldBy: mark.heldBy,
    };
  }
  if (task.phase === 'sweep') {
    phase(run, taskLogger(deps, run), 'sweeping unreferenced packs');
    return sweepGarbage(repo, {
      markId: task.markId,
      heldBy: Array.isArray(task.heldBy) ? task.heldBy : [],
      ...ttl,
    });
  }
  throw new UnknownTask(
    `a PRUNE task of phase ${JSON.stringify((task as { phase?: unknown }).phase)}`,
  );
}
