/**
 * Lambda task of the workflows: records a job's progress in the catalog (functions/core/record-job.ts),
 * then announces the state it left the job in (core/job-events.ts): a Job State Change event
 * (EventBridge with EVENT_BUS_NAME, a file with JOB_EVENTS_FILE in local mode) and, in Lambda,
 * EMF metrics on stdout.
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { recordJob } from '../core/record-job';
import { announceJob, type JobObservers } from '../core/job-events';
import { jobObserversFromEnv } from '../adapters/job-events';
import { requireEnv } from '../shared/env';
import { systemClock } from '../../kernel/ids';
import { createLogger } from '../../kernel/logger';
import type { RecordJobEvent } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-record-job' });
let deps: { catalog: DynamoDbCatalog; clock: typeof systemClock } | undefined;
let observers: JobObservers | undefined;

export async function handler(event: RecordJobEvent): Promise<{ jobId: string; status: string }> {
  deps ??= { catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')), clock: systemClock };
  const { jobId, status, log: line, job } = await recordJob(deps, event);
  if (line) log.child({ jobId: event.jobId })[line.level](line.event, line.fields);
  observers ??= jobObserversFromEnv(process.env, log);
  if (job) await announceJob(observers, job, systemClock.now());
  return { jobId, status };
}
