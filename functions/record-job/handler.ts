/**
 * Lambda task of the workflows: records a job's progress in the catalog (functions/core/record-job.ts),
 * then announces the state it left the job in (core/job-events.ts): a Job State Change event
 * (EventBridge with EVENT_BUS_NAME, a file with JOB_EVENTS_FILE in local mode) and, in Lambda,
 * EMF metrics on stdout.
 */
import { DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { recordJob } from '../core/record-job';
import { jobEvent, jobMetrics, noJobEvents, type JobEvents } from '../core/job-events';
import { EventBridgeJobEvents, FileJobEvents } from '../adapters/job-events';
import { Metrics, noMetrics } from '../../kernel/metrics';
import type { Job } from '../../kernel/model';
import { METRICS } from '../../kernel/resources';
import { requireEnv } from '../shared/env';
import { systemClock } from '../../kernel/ids';
import { createLogger } from '../../kernel/logger';
import type { RecordJobEvent } from '../../statemachines/contracts';

const log = createLogger({ service: 'stowage-record-job' });
let deps: { catalog: DynamoDbCatalog; clock: typeof systemClock } | undefined;
let observers: { events: JobEvents; metrics: Metrics } | undefined;

function wireObservers(): { events: JobEvents; metrics: Metrics } {
  const bus = process.env.EVENT_BUS_NAME;
  const file = process.env.JOB_EVENTS_FILE;
  const events = bus
    ? new EventBridgeJobEvents(bus, log)
    : file
      ? new FileJobEvents(file, log)
      : noJobEvents;
  // EMF lines only where CloudWatch Logs turns them into metrics: a Lambda's stdout.
  const sink = process.env.AWS_LAMBDA_FUNCTION_NAME
    ? (line: string) => void process.stdout.write(`${line}\n`)
    : noMetrics;
  return { events, metrics: new Metrics(METRICS.namespace, sink) };
}

/** The job's state, to whoever watches: its metrics and a Job State Change event. */
async function announce(job: Job): Promise<void> {
  observers ??= wireObservers();
  for (const m of jobMetrics(job)) {
    observers.metrics.publish(m.metrics, m.dimensions, {
      dimensionSets: m.dimensionSets,
      properties: { jobId: job.jobId },
    });
  }
  await observers.events.put(jobEvent(job, systemClock.now()));
}

export async function handler(event: RecordJobEvent): Promise<{ jobId: string; status: string }> {
  deps ??= { catalog: new DynamoDbCatalog(requireEnv('TABLE_NAME')), clock: systemClock };
  const { jobId, status, log: line, job } = await recordJob(deps, event);
  if (line) log.child({ jobId: event.jobId })[line.level](line.event, line.fields);
  if (job) await announce(job);
  return { jobId, status };
}
