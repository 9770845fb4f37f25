/**
 * What every request that starts a job shares: its dependencies, its answer, and `launch`, which
 * records the PENDING job and then starts its workflow. A request is checked whole before
 * `launch` is called, so bad input never leaves a job or an execution behind.
 */
import type { Catalog } from '../../../kernel/catalog';
import type { Job, JobItem } from '../../../kernel/model';
import type {
  BackupExecutionInput,
  RestoreExecutionInput,
  SnapshotExecutionInput,
  VerifyExecutionInput,
  PruneExecutionInput,
} from '../../../statemachines/contracts';
import type { Clock } from '../jobs';
import { announceJob } from '../job-events';

/** Port to Step Functions: starts an execution named after the job, returns its ARN. */
export interface Workflows {
  startBackup(input: BackupExecutionInput): Promise<string>;
  startRestore(input: RestoreExecutionInput): Promise<string>;
  startVerify(input: VerifyExecutionInput): Promise<string>;
  startSnapshot(input: SnapshotExecutionInput): Promise<string>;
  startPrune(input: PruneExecutionInput): Promise<string>;
  /**
   * Stops the job's execution (StopExecution: its open task tokens go, so an agent's next
   * heartbeat is refused). Idempotent; false when the job has no execution (not started yet).
   */
  stop(
    job: { kind: Job['kind']; jobId: string; executionArn?: string },
    cause: string,
  ): Promise<boolean>;
}

export interface RequestDeps {
  catalog: Catalog;
  workflows: Workflows;
  clock: Clock;
  newId(prefix: 'job' | 'rp'): string;
  queueUrlFor(agent: string): string;
  /** The agent prunes run on (AWS: the maintenance site); none: the newest agent. */
  pruneAgent?: string;
  /** Where policies' schedules live (EventBridge Scheduler in AWS); none in local mode. */
  schedules?: import('../policies').Schedules;
  /** Where jobs' workflow histories are read (Step Functions); without it a history is empty. */
  history?: import('../history').ExecutionHistory;
  /** Who hears of the job state changes the API makes (job-events.ts); none: nobody. */
  jobObservers?: import('../job-events').JobObservers;
}

export interface JobAccepted {
  jobId: string;
  kind: Job['kind'];
  status: Job['status'];
  target: string;
  agent: string;
  /** The point of a one-target backup, or the point a restore or verify reads. */
  recoveryPointId?: string;
  /** A backup's targets with their points (a backup by selector has no `recoveryPointId`). */
  items?: Array<Pick<JobItem, 'target' | 'agent' | 'recoveryPointId'>>;
  executionArn: string;
}

/**
 * Records the PENDING job, then starts its workflow; if the workflow cannot start, the job ends
 * FAILED (WorkflowNotStarted) rather than waiting forever, and the error goes on to the caller.
 */
export async function launch(
  deps: RequestDeps,
  job: Job,
  start: () => Promise<string>,
): Promise<JobAccepted> {
  await deps.catalog.createJob(job);
  await announceJob(deps.jobObservers, job, deps.clock.now());
  try {
    return accepted(job, await start());
  } catch (err) {
    const failed = await deps.catalog.updateJob(
      job.jobId,
      {
        status: 'FAILED',
        endedAt: deps.clock.now(),
        error: { name: 'WorkflowNotStarted', message: (err as Error).message },
      },
      ['PENDING'],
    );
    if (failed) await announceJob(deps.jobObservers, failed, deps.clock.now());
    throw err;
  }
}

function accepted(job: Job, executionArn: string): JobAccepted {
  return {
    jobId: job.jobId,
    kind: job.kind,
    status: job.status,
    target: job.target,
    agent: job.agent,
    ...(job.recoveryPointId ? { recoveryPointId: job.recoveryPointId } : {}),
    ...(job.items
      ? {
          items: job.items.map(({ target, agent, recoveryPointId }) => ({
            target,
            agent,
            recoveryPointId,
          })),
        }
      : {}),
    executionArn,
  };
}
