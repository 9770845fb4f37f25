/**
 * Lambda task of the workflows: moves a job through RUNNING, SUCCEEDED (restore, verify,
 * snapshot), FAILED, and for a backup its end from the items' outcomes (SUCCEEDED,
 * PARTIALLY_FAILED or FAILED).
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import {
  endBackupJob,
  errorFromStates,
  handOverRunToken,
  isSnapshotResult,
  markJobFailed,
  markJobStarted,
  markRestoreSucceeded,
  markSnapshotSucceeded,
} from '../core/jobs';
import { markPruned, markPruneWaiting, pruneSummary } from '../core/prune';
import { requireEnv } from '../shared/env';
import { systemClock } from '../../kernel/ids';
import { createLogger, LogEvent } from '../../kernel/logger';
import type { RecordJobEvent } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-record-job' });
let deps: { catalog: DynamoDbCatalog; clock: typeof systemClock } | undefined;

export async function handler(event: RecordJobEvent): Promise<{ jobId: string; status: string }> {
  deps ??= { catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')), clock: systemClock };
  const jobLog = log.child({ jobId: event.jobId });
  switch (event.action) {
    case 'start': {
      const job = await markJobStarted(deps, event.jobId, event.executionArn);
      jobLog.info(LogEvent.jobRecorded, { status: job.status, executionArn: event.executionArn });
      return { jobId: job.jobId, status: job.status };
    }
    case 'succeed': {
      const job = isSnapshotResult(event.result)
        ? await markSnapshotSucceeded(deps, event.jobId, event.result)
        : await markRestoreSucceeded(deps, event.jobId, event.result);
      jobLog.info(LogEvent.jobRecorded, { status: job.status });
      return { jobId: job.jobId, status: job.status };
    }
    case 'end': {
      const job = await endBackupJob(deps, event.jobId, event.outcomes);
      if (job.status === 'SUCCEEDED') jobLog.info(LogEvent.jobRecorded, { status: job.status });
      else jobLog.warn(LogEvent.jobFailed, { status: job.status, error: job.error });
      return { jobId: job.jobId, status: job.status };
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
      jobLog.info(LogEvent.jobRecorded, { status: job.status, prune: summary });
      return { jobId: job.jobId, status: job.status };
    }
    case 'waiting': {
      await markPruneWaiting(deps, event.jobId, event.waitingFor);
      jobLog.info('job.prune.waiting', { waitingFor: event.waitingFor });
      return { jobId: event.jobId, status: 'RUNNING' };
    }
    case 'hand-over': {
      await handOverRunToken(deps, event);
      return { jobId: event.jobId, status: 'RUNNING' };
    }
    case 'fail': {
      const error = errorFromStates(event.error);
      const job = await markJobFailed(deps, event.jobId, error);
      jobLog.warn(LogEvent.jobFailed, { status: job.status, error });
      return { jobId: job.jobId, status: job.status };
    }
    default:
      throw new Error(`unknown record-job action: ${JSON.stringify(event)}`);
  }
}
