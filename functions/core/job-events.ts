/**
 * What the outside world sees of a job changing state: an EventBridge event (`source: stowage`,
 * `detail-type: Job State Change`, the job's id, kind, status, target, agent, point, times and
 * error in `detail`) and CloudWatch metrics (jobs started and ended by kind and status, job
 * durations, a backup's bytes, a restore test's RTO). The record-job Lambda announces every
 * transition it makes; the API the ones it makes itself (a job created PENDING, a workflow that
 * could not start, a cancel).
 *
 * Delivery is at least once: a retried record-job task announces the same state again, so a
 * consumer keys on `detail.jobId` + `detail.status`. Announcing never fails a workflow: an event
 * that cannot be put is logged by the adapter and dropped.
 */
import type { Job } from '../../kernel/model';
import type { MetricDatum, Metrics } from '../../kernel/metrics';
import { JOB_EVENTS, METRICS, POLICY_EVENTS } from '../../kernel/resources';
import { TERMINAL_STATUSES } from '../../statemachines/contracts';

/** The detail of a Job State Change event. */
export interface JobStateChange {
  jobId: string;
  kind: Job['kind'];
  status: Job['status'];
  target: string;
  agent: string;
  recoveryPointId?: string;
  source?: string;
  policy?: string;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  durationMs?: number;
  error?: Job['error'];
  executionArn?: string;
  restoreTest?: { passed: boolean; rtoMs: number };
}

/** An event as PutEvents takes it (and local mode writes it). */
export interface JobEvent {
  source: typeof JOB_EVENTS.source;
  detailType: typeof JOB_EVENTS.detailType;
  time: string;
  /** The ARNs of what the event is about: the execution. */
  resources: string[];
  detail: JobStateChange;
}

/** The detail of a Policy Run Missed event (core/policies.ts announceMissedRuns). */
export interface PolicyRunMissed {
  policy: string;
  /** The run that did not start within its window: a consumer keys on policy + dueAt. */
  dueAt: string;
  flexibleWindowMinutes: number;
  schedule: string;
  timezone: string;
  message: string;
}

export interface PolicyEvent {
  source: typeof POLICY_EVENTS.source;
  detailType: typeof POLICY_EVENTS.detailType;
  time: string;
  resources: string[];
  detail: PolicyRunMissed;
}

/** What is said of a put event in the adapters' logs. */
export function eventSubject(event: JobEvent | PolicyEvent): Record<string, string> {
  return 'jobId' in event.detail
    ? { jobId: event.detail.jobId, status: event.detail.status }
    : { policy: event.detail.policy, dueAt: event.detail.dueAt };
}

/** Port: where job events go (EventBridge in AWS, a file in local mode, nowhere in tests). */
export interface JobEvents {
  put(event: JobEvent | PolicyEvent): Promise<void>;
}

export const noJobEvents: JobEvents = { put: () => Promise.resolve() };

function durationOf(job: Job): number | undefined {
  if (!job.startedAt || !job.endedAt) return undefined;
  const ms = Date.parse(job.endedAt) - Date.parse(job.startedAt);
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

export function jobEvent(job: Job, now: string): JobEvent {
  const durationMs = durationOf(job);
  const detail: JobStateChange = {
    jobId: job.jobId,
    kind: job.kind,
    status: job.status,
    target: job.target,
    agent: job.agent,
    createdAt: job.createdAt,
    ...(job.recoveryPointId ? { recoveryPointId: job.recoveryPointId } : {}),
    ...(job.source ? { source: job.source } : {}),
    ...(job.policy ? { policy: job.policy } : {}),
    ...(job.startedAt ? { startedAt: job.startedAt } : {}),
    ...(job.endedAt ? { endedAt: job.endedAt } : {}),
    ...(durationMs !== undefined ? { durationMs } : {}),
    ...(job.error ? { error: job.error } : {}),
    ...(job.executionArn ? { executionArn: job.executionArn } : {}),
    ...(job.restoreTest
      ? { restoreTest: { passed: job.restoreTest.passed, rtoMs: job.restoreTest.rtoMs } }
      : {}),
  };
  return {
    source: JOB_EVENTS.source,
    detailType: JOB_EVENTS.detailType,
    time: now,
    resources: job.executionArn ? [job.executionArn] : [],
    detail,
  };
}

/** One EMF publication: metrics under dimension sets. */
export interface JobMetrics {
  metrics: MetricDatum[];
  dimensions: Record<string, string>;
  dimensionSets: string[][];
}

/**
 * The metrics of a job in its current state: JobsStarted when it runs; once it ended JobsEnded
 * (by Status, and by Kind and Status), its JobDuration (by Kind), a backup's bytes and a restore
 * test's RTO. Nothing for a job that is still PENDING.
 */
export function jobMetrics(job: Job): JobMetrics[] {
  const out: JobMetrics[] = [];
  if (job.status === 'RUNNING') {
    out.push({
      metrics: [{ name: METRICS.jobsStarted, unit: 'Count', value: 1 }],
      dimensions: { Kind: job.kind },
      dimensionSets: [['Kind']],
    });
    return out;
  }
  if (!TERMINAL_STATUSES.includes(job.status)) return out;
  out.push({
    metrics: [{ name: METRICS.jobsEnded, unit: 'Count', value: 1 }],
    dimensions: { Kind: job.kind, Status: job.status },
    dimensionSets: [['Status'], ['Kind', 'Status']],
  });
  const durationMs = durationOf(job);
  if (durationMs !== undefined) {
    out.push({
      metrics: [{ name: METRICS.jobDuration, unit: 'Milliseconds', value: durationMs }],
      dimensions: { Kind: job.kind },
      dimensionSets: [['Kind']],
    });
  }
  const madePoints = job.status === 'SUCCEEDED' || job.status === 'PARTIALLY_FAILED';
  if (job.kind === 'BACKUP' && job.progress && madePoints) {
    out.push({
      metrics: [
        { name: METRICS.bytesProtected, unit: 'Bytes', value: job.progress.bytesDone },
        { name: METRICS.bytesNew, unit: 'Bytes', value: job.progress.bytesNew ?? 0 },
        { name: METRICS.bytesStored, unit: 'Bytes', value: job.progress.bytesStored ?? 0 },
      ],
      dimensions: {},
      dimensionSets: [[]],
    });
  }
  if (job.kind === 'RESTORE_TEST' && job.restoreTest) {
    out.push({
      metrics: [
        { name: METRICS.restoreTestRto, unit: 'Milliseconds', value: job.restoreTest.rtoMs },
      ],
      dimensions: { Passed: String(job.restoreTest.passed) },
      dimensionSets: [[], ['Passed']],
    });
  }
  return out;
}

/** Who hears of job state changes: metrics and events (both optional: tests, local mode). */
export interface JobObservers {
  events: JobEvents;
  metrics?: Metrics;
}

/** Announces `job` as it is now: its metrics, then its Job State Change event. Never throws. */
export async function announceJob(
  observers: JobObservers | undefined,
  job: Job,
  now: string,
): Promise<void> {
  if (!observers) return;
  for (const m of jobMetrics(job)) {
    observers.metrics?.publish(m.metrics, m.dimensions, {
      dimensionSets: m.dimensionSets,
      properties: { jobId: job.jobId },
    });
  }
  await observers.events.put(jobEvent(job, now));
}
