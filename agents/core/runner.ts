/**
 * Runs one task the agent received: a backup (driver → point writer → manifest) or a restore
 * (manifest → point reader → driver). The result is what the agent sends with SendTaskSuccess.
 * A backup that fails removes the objects it stored, so no partial point lingers; its manifest
 * is never written, so nothing can mistake it for a complete one.
 */
import type { Driver, DriverContext } from './driver';
import { PointReader, PointWriter, readManifest } from './points';
import type { ProgressReporter } from './progress';
import type { ObjectStore } from '../store/store';
import { parseTargetKey } from '../../functions/core/targets';
import { DriverError, PointNotFound } from '../../functions/shared/errors';
import type { Logger } from '../../functions/shared/logger';
import { LogEvent } from '../../functions/shared/logger';
import type {
  BackupResult,
  BackupTask,
  RestoreResult,
  RestoreTask,
} from '../../statemachines/contracts';
import { ObjectNotFound } from '../store/store';

export interface RunnerDeps {
  agent: string;
  drivers: ReadonlyMap<string, Driver>;
  store: ObjectStore;
  log: Logger;
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

function context(deps: RunnerDeps, run: TaskRun, log: Logger): DriverContext {
  return {
    log,
    signal: run.signal,
    phase: (text) => {
      log.info(LogEvent.driverStep, { phase: text });
      run.progress.setPhase(text);
    },
  };
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
  const writer = new PointWriter(deps.store, task.recoveryPointId, (n) => run.progress.addBytes(n));
  try {
    const outcome = await driver.backup(name, writer, context(deps, run, log));
    run.progress.setPhase('writing manifest');
    const completedAt = new Date().toISOString();
    const manifestKey = await writer.commit({
      jobId: task.jobId,
      target: task.target,
      agent: deps.agent,
      startedAt,
      completedAt,
      metadata: outcome.metadata,
    });
    return {
      recoveryPointId: task.recoveryPointId,
      manifestKey,
      startedAt,
      completedAt,
      bytesRead: writer.bytesStored,
      bytesStored: writer.bytesStored,
      streams: writer.streams.map((s) => ({ name: s.name, kind: s.kind, size: s.size })),
      summary: outcome.summary,
    };
  } catch (err) {
    await writer
      .discard()
      .catch((cleanupErr: unknown) =>
        log.warn('agent.point.discard_failed', { error: cleanupErr }),
      );
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
  run.progress.setPhase('reading manifest');
  let manifest;
  try {
    manifest = await readManifest(deps.store, task.recoveryPointId);
  } catch (err) {
    if (err instanceof ObjectNotFound) {
      throw new PointNotFound(
        `recovery point ${task.recoveryPointId} has no manifest in the store`,
        { cause: err },
      );
    }
    throw err;
  }
  const reader = new PointReader(deps.store, manifest, (n) => run.progress.addBytes(n));
  const outcome = await driver.restore(
    manifest.metadata,
    reader,
    { name, inPlace: task.inPlace },
    context(deps, run, log),
  );
  return {
    restoredTarget: outcome.restoredTarget,
    startedAt,
    completedAt: new Date().toISOString(),
    bytesWritten: run.progress.total,
  };
}
