/**
 * Job lifecycle transitions, called from the state machines' Lambda tasks. Each is idempotent:
 * Step Functions may run a task twice, and a second call finds the job already where the first
 * left it. A job in a terminal state is never moved again.
 */
import type { Catalog } from './catalog';
import type { Job, RecoveryPoint } from './model';
import { platformOf } from './targets';
import { ConflictError, NotFoundError, type ErrorRecord } from '../shared/errors';
import type {
  BackupRequestOptions,
  BackupResult,
  CommitPointOutput,
  JobStatus,
  RestoreResult,
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
  return updated ?? mustGet(deps.catalog, jobId);
}

/** Ends a restore or verify job that its agent finished. */
export async function markRestoreSucceeded(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  result: RestoreResult | VerifyResult,
): Promise<Job> {
  const bytes = 'bytesWritten' in result ? result.bytesWritten : result.bytesVerified;
  const updated = await deps.catalog.updateJob(
    jobId,
    {
      status: 'SUCCEEDED',
      endedAt: deps.clock.now(),
      progress: finalProgress(bytes, deps.clock),
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

export async function markJobFailed(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  error: ErrorRecord,
): Promise<Job> {
  const updated = await deps.catalog.updateJob(
    jobId,
    { status: 'FAILED', endedAt: deps.clock.now(), error },
    ACTIVE,
  );
  return updated ?? mustGet(deps.catalog, jobId);
}

/**
 * Writes the recovery point (the only place a COMPLETED point is ever written), then marks the
 * backup job SUCCEEDED. If the second write is lost, a retry rewrites the same point and
 * finishes the job.
 */
export async function commitRecoveryPoint(
  deps: { catalog: Catalog; clock: Clock },
  input: {
    jobId: string;
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
  // A job that already ended otherwise (failed, cancelled) must not gain a point afterwards.
  const job = await mustGet(deps.catalog, input.jobId);
  if (!ACTIVE.includes(job.status) && job.status !== 'SUCCEEDED') {
    throw new ConflictError(
      `job ${input.jobId} is ${job.status}; recovery point ${input.recoveryPointId} is not committed`,
    );
  }
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
  };
  await deps.catalog.putPoint(point);
  await deps.catalog.updateJob(
    input.jobId,
    {
      status: 'SUCCEEDED',
      endedAt: deps.clock.now(),
      progress: {
        ...finalProgress(result.bytesRead, deps.clock),
        bytesNew: result.bytesNew,
        bytesStored: result.bytesStored,
      },
    },
    ACTIVE,
  );
  return { recoveryPointId: point.recoveryPointId, status: 'COMPLETED' };
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
