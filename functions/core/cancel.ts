/**
 * Cancelling a job (`POST /jobs/{id}/cancellation`, `stowage cancel`).
 *
 * The catalog first, then the execution: the job becomes CANCELLED in one conditional write
 * (kernel/catalog.ts `cancelJob`), which is what the agents watch (every `jobCheckMs`, 2 s): a
 * task of a job that is no longer RUNNING aborts, releases its holds and removes what it made,
 * and a task still in the queue is never run. Stopping the execution then closes its task
 * tokens (an agent's next heartbeat is refused, a second reason to stop) and ends the workflow,
 * so no Lambda task records anything after the cancel: a cancelled backup never gains a point
 * (commit-point refuses a job that is not active).
 *
 * An in-place restore past its point of no return (the agent marks `pointOfNoReturnAt` on its
 * claim, conditionally on no cancel having marked it, just before it swaps the target) is not
 * cancelled: stopping it there would leave the target half replaced. The answer says it
 * finishes; the job records that a cancel was asked. The catalog's cancel marks every claim
 * first, conditionally the other way, so a cancel and the mark never both win.
 *
 * Cancelling a job that has ended is a ConflictError (409), naming how it ended.
 */
import type { Catalog } from '../../kernel/catalog';
import { ConflictError, NotFoundError } from '../../kernel/errors';
import type { Job, TaskRecord } from '../../kernel/model';
import type { Clock } from './jobs';
import type { Workflows } from './requests/launch';
import { announceJob, type JobObservers } from './job-events';

export interface CancelDeps {
  catalog: Catalog;
  clock: Clock;
  workflows: Pick<Workflows, 'stop'>;
  /** Who hears that the job was CANCELLED (job-events.ts); none: nobody. */
  jobObservers?: JobObservers;
}

/** What `POST /jobs/{id}/cancellation` and `GET` of it answer. */
export interface Cancellation {
  jobId: string;
  kind: Job['kind'];
  target: string;
  status: Job['status'];
  /** The job was stopped (CANCELLED); false when it runs on past its point of no return. */
  cancelled: boolean;
  /** An in-place restore that had passed its point of no return: it finishes. */
  pastPointOfNoReturn: boolean;
  /** Tasks an agent took for the job that have not ended yet (their holds not yet released). */
  tasksRunning: number;
  /** Tasks that ended (for a cancelled job: stopped, their holds released). */
  tasksEnded: number;
  /** Nothing of the job runs any more: it ended and every task it handed out ended. */
  settled: boolean;
  message: string;
}

const ACTIVE: readonly Job['status'][] = ['PENDING', 'RUNNING'];

export async function cancelJob(deps: CancelDeps, jobId: string): Promise<Cancellation> {
  const job = await deps.catalog.getJob(jobId);
  if (!job) throw new NotFoundError(`job ${jobId} does not exist; \`stowage jobs\` lists them`);
  if (!ACTIVE.includes(job.status)) throw endedAlready(job);
  const now = deps.clock.now();
  const cancelled = job.pointOfNoReturnAt
    ? undefined
    : await deps.catalog.cancelJob(jobId, {
        endedAt: now,
        cancelRequestedAt: now,
        error: { name: 'Cancelled', message: `cancelled by request at ${now}` },
      });
  if (!cancelled) {
    // Ended meanwhile, or past its point of no return (before the read or since).
    const marked = await deps.catalog.updateJob(jobId, { cancelRequestedAt: now }, ['RUNNING']);
    if (!marked?.pointOfNoReturnAt) throw endedAlready((await deps.catalog.getJob(jobId)) ?? job);
    return cancellationOf(marked, await deps.catalog.listTasks(jobId));
  }
  await announceJob(deps.jobObservers, cancelled, now);
  await deps.workflows.stop(cancelled, `job ${jobId} was cancelled at ${now}`);
  return cancellationOf(cancelled, await deps.catalog.listTasks(jobId));
}

/** Where a cancel stands: whether the job's tasks have stopped (what `cancel --wait` polls). */
export async function cancellationStatus(
  deps: Pick<CancelDeps, 'catalog'>,
  jobId: string,
): Promise<Cancellation> {
  const job = await deps.catalog.getJob(jobId);
  if (!job) throw new NotFoundError(`job ${jobId} does not exist; \`stowage jobs\` lists them`);
  return cancellationOf(job, await deps.catalog.listTasks(jobId));
}

function endedAlready(job: Job): ConflictError {
  return new ConflictError(
    `job ${job.jobId} has ended (${job.status}${job.endedAt ? ` at ${job.endedAt}` : ''}): there is nothing to cancel`,
  );
}

export function cancellationOf(job: Job, tasks: readonly TaskRecord[]): Cancellation {
  const taken = tasks.filter((t) => t.takenAt);
  const running = taken.filter((t) => !t.endedAt).length;
  const cancelled = job.status === 'CANCELLED';
  const pastPointOfNoReturn = !cancelled && Boolean(job.pointOfNoReturnAt);
  const settled = !ACTIVE.includes(job.status) && running === 0;
  return {
    jobId: job.jobId,
    kind: job.kind,
    target: job.target,
    status: job.status,
    cancelled,
    pastPointOfNoReturn,
    tasksRunning: running,
    tasksEnded: taken.length - running,
    settled,
    message: messageOf(job, cancelled, running),
  };
}

function messageOf(job: Job, cancelled: boolean, running: number): string {
  const what = `${job.kind.toLowerCase()} ${job.jobId} of ${job.target}`;
  if (!cancelled) {
    if (job.pointOfNoReturnAt) {
      return ACTIVE.includes(job.status)
        ? `${what} is past its point of no return (since ${job.pointOfNoReturnAt}): it is not cancelled and finishes replacing ${job.target}`
        : `${what} was past its point of no return when the cancel came: it finished ${job.status}`;
    }
    return `${what} is ${job.status}`;
  }
  const stopping =
    running > 0
      ? `${running} task${running === 1 ? ' is' : 's are'} stopping (releasing holds, removing partial work)`
      : 'every task stopped, its holds released';
  const effect =
    job.kind === 'BACKUP'
      ? (job.items ?? []).some((i) => i.status === 'COMPLETED')
        ? 'targets that completed before the cancel keep their points; the others get none'
        : 'no recovery point is made'
      : job.kind === 'RESTORE'
        ? `what the restore made is removed and ${job.target} is as it was before it`
        : 'nothing more is done';
  return `${what} CANCELLED: ${effect}; ${stopping}`;
}
