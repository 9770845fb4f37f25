/**
 * Job lifecycle transitions, called from the state machines' Lambda tasks. Each is idempotent:
 * Step Functions may run a task twice, and a second call finds the job already where the first
 * left it. A job in a terminal state is never moved again.
 */
import { SITE_NAME, type Catalog } from '../../kernel/catalog';
import type {
  Job,
  JobItem,
  JobProgress,
  RecoveryPoint,
  RestoreTestRecord,
} from '../../kernel/model';
import { platformOf } from '../../kernel/targets';
import {
  ConflictError,
  NotFoundError,
  ValidationError,
  type ErrorRecord,
} from '../../kernel/errors';
import type {
  BackupItemOutcome,
  BackupRequestOptions,
  BackupResult,
  CommitPointOutput,
  JobStatus,
  PartFailure,
  RestoreResult,
  RestoreTestOutcome,
  SnapshotResult,
  StatesError,
  VerifyResult,
} from '../../statemachines/contracts';

const ACTIVE: readonly JobStatus[] = ['PENDING', 'RUNNING'];

export interface Clock {
  now(): string;
}

async function mustGet(catalog: Catalog, jobId: string): Promise<Job> {
  const job = await catalog.getJob(jobId);
  if (!job) throw new NotFoundError(`job ${jobId} is not in the catalog`);
  return job;
}

export async function markJobStarted(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  executionArn: string,
): Promise<Job> {
  const updated = await deps.catalog.updateJob(
    jobId,
    { status: 'RUNNING', startedAt: deps.clock.now(), executionArn },
    ['PENDING'],
  );
  if (updated) return updated;
  const job = await mustGet(deps.catalog, jobId);
  // Cancelled before its workflow got here: the workflow must not go on (it fails at once).
  if (!ACTIVE.includes(job.status)) {
    throw new ConflictError(`job ${jobId} is ${job.status}: its workflow does not run`);
  }
  return job;
}

/**
 * Hands a claimed task's run token to the agent that claimed it (through the catalog, on the
 * claim's record under the claiming site). A job that has ended (failed, cancelled) gets no
 * token: its task must not run. The site is the one the claim names: a site's agent answers only
 * claim tokens of its own queue, and a token handed to another site's record is one it cannot
 * take (its role updates only its own site's records).
 */
export async function handOverRunToken(
  deps: { catalog: Catalog },
  input: { jobId: string; claimId: string; agent: string; taskToken: string },
): Promise<void> {
  if (!/^[A-Za-z0-9_-]{8,128}$/.test(input.claimId)) {
    throw new ValidationError(`claim id ${JSON.stringify(input.claimId)} is not a claim id`);
  }
  if (typeof input.agent !== 'string' || !SITE_NAME.test(input.agent)) {
    throw new ValidationError(`claim agent ${JSON.stringify(input.agent)} is not a site name`);
  }
  const job = await mustGet(deps.catalog, input.jobId);
  if (!ACTIVE.includes(job.status)) {
    throw new ConflictError(`job ${input.jobId} is ${job.status}: its task is not run`);
  }
  await deps.catalog.putRunToken(
    { site: input.agent, jobId: input.jobId, claimId: input.claimId },
    input.taskToken,
  );
}

/** Ends a restore or verify job that its agent finished. */
export async function markRestoreSucceeded(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  result: RestoreResult | VerifyResult,
): Promise<Job> {
  if ('restoredTarget' in result && result.test) {
    return markRestoreTested(deps, jobId, result, result.test);
  }
  const bytes = 'bytesWritten' in result ? result.bytesWritten : result.bytesVerified;
  if ('bytesVerified' in result) {
    // Retention never expires the newest point that passed verify (retention.ts).
    const job = await deps.catalog.getJob(jobId);
    if (job?.kind === 'VERIFY' && job.recoveryPointId && ACTIVE.includes(job.status)) {
      await deps.catalog.updatePoint(job.recoveryPointId, { verifiedAt: deps.clock.now() });
    }
  }
  const warnings = 'warnings' in result ? result.warnings : undefined;
  const updated = await deps.catalog.updateJob(
    jobId,
    {
      status: 'SUCCEEDED',
      endedAt: deps.clock.now(),
      progress: finalProgress(bytes, deps.clock),
      ...(warnings && warnings.length > 0 ? { warnings: warnings.slice(0, 100) } : {}),
      ...('listing' in result && result.listing ? { listing: result.listing } : {}),
    },
    ACTIVE,
  );
  return updated ?? mustGet(deps.catalog, jobId);
}

/**
 * Ends a snapshot job its agent finished, keeping what the agent did on the job (the snapshot
 * created and its name, the schedule set...). A create's job takes the id of the snapshot made.
 */
export async function markSnapshotSucceeded(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  result: SnapshotResult,
): Promise<Job> {
  const made = result.action === 'create' && result.snapshot ? result.snapshot.name : undefined;
  const updated = await deps.catalog.updateJob(
    jobId,
    {
      status: 'SUCCEEDED',
      endedAt: deps.clock.now(),
      progress: finalProgress(0, deps.clock),
      snapshot: { action: result.action, result },
      ...(made ? { recoveryPointId: `${result.target}/${made}` } : {}),
    },
    ACTIVE,
  );
  return updated ?? mustGet(deps.catalog, jobId);
}

/** Whether a task's success output is a snapshot task's (the record-job Lambda serves all). */
export function isSnapshotResult(
  result: RestoreResult | VerifyResult | SnapshotResult,
): result is SnapshotResult {
  return 'action' in result && 'pruned' in result;
}

/**
 * Ends a restore test its agent ran to the end: the point records the outcome (passed or not,
 * the RTO, the probe's exit code and output), and the job SUCCEEDED when the test passed, else
 * FAILED with RestoreTestFailed. A job that already ended leaves the point as it is.
 */
async function markRestoreTested(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  result: RestoreResult,
  test: RestoreTestOutcome,
): Promise<Job> {
  const job = await mustGet(deps.catalog, jobId);
  if (!ACTIVE.includes(job.status)) return job;
  const testedAt = deps.clock.now();
  if (job.recoveryPointId) {
    const record: RestoreTestRecord = { ...test, jobId, testedAt };
    await deps.catalog.updatePoint(job.recoveryPointId, { restoreTest: record });
  }
  const failure = test.passed ? undefined : restoreTestFailure(test);
  const updated = await deps.catalog.updateJob(
    jobId,
    {
      status: test.passed ? 'SUCCEEDED' : 'FAILED',
      endedAt: testedAt,
      progress: finalProgress(result.bytesWritten, deps.clock),
      restoreTest: test,
      ...(failure ? { error: failure } : {}),
    },
    ACTIVE,
  );
  return updated ?? mustGet(deps.catalog, jobId);
}

/** Why a restore test that ran did not pass, in one error. */
function restoreTestFailure(test: RestoreTestOutcome): ErrorRecord {
  if (test.error) return { name: 'RestoreTestFailed', message: test.error.message };
  const probe = test.probe;
  if (!probe) return { name: 'RestoreTestFailed', message: `${test.sandbox} did not run` };
  const how =
    probe.exitCode === null
      ? (probe.error ?? 'it did not finish')
      : `it exited with code ${probe.exitCode}`;
  const said = probe.output.trim().slice(-500);
  return {
    name: 'RestoreTestFailed',
    message: `probe \`${probe.command.join(' ')}\` in ${test.sandbox} failed: ${how}${said ? `; it wrote: ${said}` : '; it wrote nothing'}`,
  };
}

export async function markJobFailed(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  error: ErrorRecord,
): Promise<Job> {
  // A restore test that could not run (the restore failed, no agent) is a failed test too: the
  // point says so, so `stowage points` never shows an older pass as the last word.
  const job = await deps.catalog.getJob(jobId);
  if (job?.kind === 'RESTORE_TEST' && job.recoveryPointId && ACTIVE.includes(job.status)) {
    const record: RestoreTestRecord = {
      passed: false,
      sandbox: job.target,
      jobId,
      testedAt: deps.clock.now(),
      error,
    };
    await deps.catalog.updatePoint(job.recoveryPointId, { restoreTest: record });
  }
  const updated = await deps.catalog.updateJob(
    jobId,
    { status: 'FAILED', endedAt: deps.clock.now(), error },
    ACTIVE,
  );
  return updated ?? mustGet(deps.catalog, jobId);
}

/**
 * Marks the job's item COMPLETED with its final progress, then writes the recovery point (the
 * only place a COMPLETED point is ever written). The job itself ends after every item has
 * (`endBackupJob`). If the second write is lost, a retry finds the item COMPLETED and writes the
 * same point.
 */
export async function commitRecoveryPoint(
  deps: { catalog: Catalog; clock: Clock },
  input: {
    jobId: string;
    itemIndex: number;
    recoveryPointId: string;
    target: string;
    agent: string;
    result: BackupResult;
    /** The request's options; a `label` goes onto the point. */
    options?: BackupRequestOptions;
  },
): Promise<CommitPointOutput> {
  const { result } = input;
  if (result.recoveryPointId !== input.recoveryPointId) {
    throw new Error(
      `agent reported point ${result.recoveryPointId} for job ${input.jobId}, expected ${input.recoveryPointId}`,
    );
  }
  const job = await mustGet(deps.catalog, input.jobId);
  const point: RecoveryPoint = {
    recoveryPointId: input.recoveryPointId,
    target: input.target,
    platform: platformOf(input.target),
    agent: input.agent,
    jobId: input.jobId,
    status: 'COMPLETED',
    createdAt: result.startedAt,
    completedAt: result.completedAt,
    durationMs: Date.parse(result.completedAt) - Date.parse(result.startedAt),
    bytesRead: result.bytesRead,
    bytesNew: result.bytesNew,
    bytesStored: result.bytesStored,
    streams: result.streams,
    manifestKey: result.manifestKey,
    summary: result.summary,
    ...(input.options?.label ? { label: input.options.label } : {}),
    ...(input.options?.policy ? { policy: input.options.policy } : {}),
    ...(result.failures?.length ? { failures: result.failures } : {}),
  };
  const existing = await deps.catalog.getPoint(point.recoveryPointId);
  if (existing && existing.jobId !== input.jobId) {
    throw new ConflictError(
      `recovery point ${point.recoveryPointId} belongs to another job (${existing.jobId})`,
    );
  }
  // The item first, conditionally on the job being active: a job that ended otherwise (failed,
  // cancelled: cancelJob marks every open item CANCELLED in the same write) never gains a point,
  // and a cancel that comes after this write leaves the COMPLETED item, and its point, alone.
  // A retried commit finds its item COMPLETED already and leaves it (and its end time) as it is.
  if (job.items?.[input.itemIndex]?.status !== 'COMPLETED') {
    const wrote = await deps.catalog.updateJobItem(
      input.jobId,
      input.itemIndex,
      {
        status: 'COMPLETED',
        progress: {
          ...finalProgress(result.bytesRead, deps.clock),
          bytesNew: result.bytesNew,
          bytesStored: result.bytesStored,
        },
        // A point that lacks failed parts: the item is COMPLETED with an error, and the job
        // ends PARTIALLY_FAILED (endBackupJob).
        ...(result.failures?.length ? { error: partialError(result.failures) } : {}),
      },
      ACTIVE,
    );
    const now = wrote ? undefined : await mustGet(deps.catalog, input.jobId);
    if (now && now.items?.[input.itemIndex]?.status !== 'COMPLETED') {
      throw new ConflictError(
        `job ${input.jobId} is ${now.status}; recovery point ${input.recoveryPointId} is not committed`,
      );
    }
  }
  await deps.catalog.putPoint(point);
  return { recoveryPointId: point.recoveryPointId, status: 'COMPLETED' };
}

/**
 * Ends a backup job once every item has an outcome (the output of the workflow's Map): SUCCEEDED
 * when all items completed, PARTIALLY_FAILED when some did, FAILED when none did. The failed
 * items get their errors; the job's error names them. Idempotent: a job that already ended is
 * returned as it is.
 */
export async function endBackupJob(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  outcomes: readonly BackupItemOutcome[],
): Promise<Job> {
  const job = await mustGet(deps.catalog, jobId);
  if (!ACTIVE.includes(job.status)) return job;
  const items: JobItem[] = (job.items ?? []).map((item) => ({ ...item }));
  for (const outcome of outcomes) {
    const item = items[outcome.index];
    if (!item) {
      throw new Error(`job ${jobId} has no item ${outcome.index}; outcomes do not match the job`);
    }
    if (outcome.status === 'COMPLETED') {
      item.status = 'COMPLETED';
    } else {
      item.status = 'FAILED';
      item.error = errorFromStates(outcome.error);
    }
  }
  // An item without an outcome did not finish: it is not a success.
  for (const item of items) {
    if (item.status !== 'COMPLETED' && item.status !== 'FAILED') {
      item.status = 'FAILED';
      item.error ??= { name: 'InternalError', message: 'the workflow reported no outcome for it' };
    }
  }
  if (items.length === 0) {
    // Nothing was backed up: never a success.
    return markJobFailed(deps, jobId, { name: 'InternalError', message: 'the job has no targets' });
  }
  const failed = items.filter((i) => i.status === 'FAILED');
  const completed = items.filter((i) => i.status === 'COMPLETED');
  // A point committed without some parts (a vApp's failed child) carries their error.
  const partial = completed.filter((i) => i.error !== undefined);
  const status: JobStatus =
    failed.length + partial.length === 0
      ? 'SUCCEEDED'
      : completed.length === 0
        ? 'FAILED'
        : 'PARTIALLY_FAILED';
  const updated = await deps.catalog.updateJob(
    jobId,
    {
      status,
      endedAt: deps.clock.now(),
      items,
      // A job with no point keeps the agent's last progress: it shows where it stopped.
      ...(completed.length ? { progress: sumProgress(completed, deps.clock) } : {}),
      ...(failed.length + partial.length
        ? { error: failureOf([...failed, ...partial], items.length) }
        : {}),
    },
    ACTIVE,
  );
  return updated ?? mustGet(deps.catalog, jobId);
}

/** One item: its own error. Several: the first error's name, and every failed target's message. */
/** The error of a point that lacks parts: PartiallyBackedUp, naming each failed part. */
export function partialError(failures: readonly PartFailure[]): ErrorRecord {
  const each = failures.map((f) => `${f.part}: ${f.error.name}: ${f.error.message}`).join('; ');
  return {
    name: 'PartiallyBackedUp',
    message: `the point lacks ${failures.length} part${failures.length > 1 ? 's' : ''} that failed: ${each}`,
  };
}

function failureOf(failed: JobItem[], total: number): ErrorRecord {
  const first = failed[0]!.error!;
  if (total === 1) return first;
  const each = failed.map((i) => `${i.target}: ${i.error?.message ?? 'failed'}`).join('; ');
  return { name: first.name, message: `${failed.length} of ${total} targets failed: ${each}` };
}

function sumProgress(completed: JobItem[], clock: Clock): JobProgress {
  const sum = (pick: (p: JobProgress) => number | undefined) =>
    completed.reduce((n, i) => n + (i.progress ? (pick(i.progress) ?? 0) : 0), 0);
  return {
    ...finalProgress(
      sum((p) => p.bytesDone),
      clock,
    ),
    bytesNew: sum((p) => p.bytesNew),
    bytesStored: sum((p) => p.bytesStored),
  };
}

function finalProgress(bytes: number, clock: Clock) {
  return { phase: 'done', bytesDone: bytes, rate: 0, updatedAt: clock.now() };
}

/**
 * Turns a Catch's `{ Error, Cause }` into the catalog's `{ name, message }`. A Lambda's Cause is
 * a JSON document with `errorMessage`; an agent's is the message it sent with SendTaskFailure.
 */
export function errorFromStates(error: StatesError): ErrorRecord {
  let message = error.Cause ?? '';
  try {
    const parsed = JSON.parse(message) as { errorMessage?: unknown };
    if (parsed && typeof parsed.errorMessage === 'string') message = parsed.errorMessage;
  } catch {
    // not JSON: the cause is the message
  }
  if (error.Error === 'States.HeartbeatTimeout') {
    message = `the agent stopped reporting (no heartbeat in time)${message ? `: ${message}` : ''}`;
  } else if (error.Error === 'States.Timeout') {
    message = `the task did not finish in time${message ? `: ${message}` : ''}`;
  }
  return { name: error.Error, message: message || error.Error };
}
