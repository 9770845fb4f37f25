/**
 * What the record-job Lambda does with each of its actions (statemachines/contracts.ts,
 * RecordJobEvent): moves a job through RUNNING, SUCCEEDED (restore, verify, snapshot), FAILED,
 * and for a backup its end from the items' outcomes (SUCCEEDED, PARTIALLY_FAILED or FAILED);
 * records a prune's progress; hands a claimed task its run token. Returns the job's status and
 * the log line the handler writes for it.
 */
import type { Catalog } from '../../kernel/catalog';
import type { Job } from '../../kernel/model';
import { LogEvent } from '../../kernel/logger';
import type { RecordJobEvent } from '../../statemachines/contracts';
import {
  type Clock,
  endBackupJob,
  errorFromStates,
  handOverRunToken,
  isSnapshotResult,
  markJobFailed,
  markJobStarted,
  markRestoreSucceeded,
  markSnapshotSucceeded,
} from './jobs';
import { markPruned, markPruneWaiting, pruneSummary } from './prune';

export interface Recorded {
  jobId: string;
  status: string;
  log?: { level: 'info' | 'warn'; event: string; fields: Record<string, unknown> };
  /** The job as the action left it, when the action moves its state (announced: job-events.ts). */
  job?: Job;
}

export async function recordJob(
  deps: { catalog: Catalog; clock: Clock },
  event: RecordJobEvent,
): Promise<Recorded> {
  switch (event.action) {
    case 'start': {
      const job = await markJobStarted(deps, event.jobId, event.executionArn);
      return recorded(job, 'info', LogEvent.jobRecorded, { executionArn: event.executionArn });
    }
    case 'succeed': {
      const job = isSnapshotResult(event.result)
        ? await markSnapshotSucceeded(deps, event.jobId, event.result)
        : await markRestoreSucceeded(deps, event.jobId, event.result);
      return recorded(job, 'info', LogEvent.jobRecorded);
    }
    case 'end': {
      const job = await endBackupJob(deps, event.jobId, event.outcomes);
      return job.status === 'SUCCEEDED'
        ? recorded(job, 'info', LogEvent.jobRecorded)
        : recorded(job, 'warn', LogEvent.jobFailed, { error: job.error });
    }
    case 'pruned': {
      const summary = pruneSummary(
        event.mark.markId === undefined,
        event.plan,
        event.mark,
        event.sweep,
        event.waitedFor ?? [],
      );
      const job = await markPruned(deps, event.jobId, summary);
      return recorded(job, 'info', LogEvent.jobRecorded, { prune: summary });
    }
    case 'waiting':
      await markPruneWaiting(deps, event.jobId, event.waitingFor);
      return {
        jobId: event.jobId,
        status: 'RUNNING',
        log: {
          level: 'info',
          event: 'job.prune.waiting',
          fields: { waitingFor: event.waitingFor },
        },
      };
    case 'hand-over':
      await handOverRunToken(deps, event);
      return { jobId: event.jobId, status: 'RUNNING' };
    case 'fail': {
      const error = errorFromStates(event.error);
      const job = await markJobFailed(deps, event.jobId, error);
      return recorded(job, 'warn', LogEvent.jobFailed, { error });
    }
    default:
      throw new Error(`unknown record-job action: ${JSON.stringify(event satisfies never)}`);
  }
}

function recorded(
  job: Job,
  level: 'info' | 'warn',
  event: string,
  fields: Record<string, unknown> = {},
): Recorded {
  return {
    jobId: job.jobId,
    status: job.status,
    log: { level, event, fields: { status: job.status, ...fields } },
    job,
  };
}
