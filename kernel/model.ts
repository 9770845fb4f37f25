/**
 * The catalog's records as the domain sees them. Only kernel/adapters/dynamodb-catalog.ts
 * knows how they are keyed and stored.
 */
import type { ErrorRecord } from './errors';
import type {
  JobKind,
  JobStatus,
  SnapshotAction,
  SnapshotInfo,
  SnapshotResult,
  SnapshotSchedule,
  TreeListing,
  StreamSummary,
  BackupRequestOptions,
  PruneSummary,
  RestoreTestOutcome,
  PartFailure,
} from '../statemachines/contracts';

export interface JobProgress {
  /** What the agent is doing, in words (`saving image`, `volume data`...). */
  phase: string;
  /** Bytes read from the source (backup), written to the target (restore) or checked (verify). */
  bytesDone: number;
  /** All the bytes the job will move, when the driver knows it. */
  bytesTotal?: number;
  /** Backup: plain bytes the repository did not hold yet. */
  bytesNew?: number;
  /** Backup: compressed, encrypted bytes stored so far. */
  bytesStored?: number;
  /** Bytes per second over the last reporting interval. */
  rate: number;
  /** Seconds left at the current rate, when the total is known. */
  etaSeconds?: number;
  updatedAt: string;
}

/** CANCELLED: the job was cancelled before this item completed; it made no point. */
export type JobItemStatus = 'PENDING' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';

/** One target of a backup job (a single-target backup has one). */
export interface JobItem {
  /** `platform:name`. */
  target: string;
  agent: string;
  /** The point this item produces; listed only once COMPLETED. */
  recoveryPointId: string;
  status: JobItemStatus;
  progress?: JobProgress;
  error?: ErrorRecord;
}

export interface Job {
  jobId: string;
  kind: JobKind;
  /**
   * The target backed up (or the label selector, `docker:app=web`), or for a restore the target
   * it produces.
   */
  target: string;
  /** The agent; for a backup whose items are on several agents, their names joined by `,`. */
  agent: string;
  status: JobStatus;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  executionArn?: string;
  /**
   * The point a backup of one target produces, or the point a restore reads. Absent for a
   * backup by selector: each of its items has its own. For a snapshot job, the snapshot's id
   * (`lxd:web/snap0`; a create's becomes the name taken once it is known), or for a schedule the
   * target.
   */
  recoveryPointId?: string;
  /** For a restore: the target the point was taken of. */
  source?: string;
  /** A backup's label (e.g. `pre-update`). */
  label?: string;
  progress?: JobProgress;
  error?: ErrorRecord;
  /** A backup's targets, each with its point, status and progress. */
  items?: JobItem[];
  /** For a SNAPSHOT job: what was asked, and once it succeeded, what the agent did. */
  snapshot?: SnapshotJob;
  /** What a finished job found wrong beside its own work (a verify: bad index objects skipped). */
  warnings?: string[];
  /** A PRUNE job: what it deleted (or, dry, would have). */
  prune?: PruneSummary;
  /** A RESTORE_TEST job that ran: what it found (the point records it too). */
  restoreTest?: RestoreTestOutcome;
  /** The policy whose run started it. */
  policy?: string;
  /**
   * A backup of a policy's every verifyEvery-th or restoreTestEvery-th run: the checks the
   * backup workflow starts on its points once it ended (functions/core/checks.ts), and, once
   * started, the jobs they are.
   */
  checks?: JobChecks;
  /**
   * When an in-place restore passed its point of no return (the agent marks it, only while the
   * job is RUNNING): a cancel after that lets the restore finish instead of stopping it.
   */
  pointOfNoReturnAt?: string;
  /** `stowage ls`: the listing the agent read from the point's tree index. */
  listing?: TreeListing;
  /**
   * When a cancel was asked for. A job it stopped is CANCELLED (error `Cancelled`); an in-place
   * restore past its point of no return keeps running to its end and only records the ask.
   */
  cancelRequestedAt?: string;
}

/** The checks a policy's run asks for on the points of its backups (Job.checks). */
export interface JobChecks {
  /** Verify every point the backup completed. */
  verify?: boolean;
  /** Restore-test every Docker and LXD point it completed, with this probe if any. */
  restoreTest?: boolean;
  probe?: string;
  /** The checks started (or that could not start, with why), one per point and kind. */
  started?: Array<{
    kind: 'VERIFY' | 'RESTORE_TEST';
    recoveryPointId: string;
    jobId?: string;
    error?: string;
  }>;
}

/**
 * One task an agent claimed for a job (its run token handed over, read once by the agent): the
 * agent records when it took the task and when the task ended, after its holds were released,
 * so `stowage cancel --wait` knows when nothing of the job runs any more.
 */
export interface TaskRecord {
  claimId: string;
  handedOverAt: string;
  agent?: string;
  takenAt?: string;
  endedAt?: string;
  /** succeeded | failed | stopped (aborted: the job ended, the token went) */
  outcome?: 'succeeded' | 'failed' | 'stopped';
}

/** One line an agent logged while it ran a task: what the job page and `stowage job --log` show. */
export interface TaskLogLine {
  /** ISO 8601, when the agent logged it. */
  at: string;
  level: 'info' | 'warn' | 'error';
  /** The log event (`driver.step`, `agent.task.succeeded`, ...). */
  event: string;
  /** Its fields as `key=value` words, secrets masked, cut short (agents/core/task-log.ts). */
  text: string;
}

/**
 * A batch of one task's log lines as its agent flushed it (about once a second while the task
 * runs, and when it ends): one catalog item each, written once, read back by claim and `seq`.
 */
export interface TaskLogBatch {
  /** The task's claim (one per attempt: a retried task logs under its new claim). */
  claimId: string;
  /** 0, 1, 2, ... within the claim, in the order the agent wrote them. */
  seq: number;
  agent: string;
  target: string;
  lines: TaskLogLine[];
  /** Lines the task logged past the cap, up to this batch (the agent counts, keeps none). */
  dropped?: number;
}

/** A line of a job's agent log as the API answers it (GET /jobs/{id}/log). */
export interface JobLogLine extends TaskLogLine {
  agent: string;
  target: string;
  /** The task's claim: one per attempt, so a retried task's lines are told apart. */
  claimId: string;
}

/** A job's agent log (functions/core/job-log.ts). */
export interface JobLog {
  jobId: string;
  /** Oldest first: each task's lines in the order its agent logged them, tasks merged by time. */
  lines: JobLogLine[];
  /** Lines the agents logged past each task's cap and did not keep. */
  dropped: number;
  /** The oldest lines left out of this answer (it holds at most MAX_JOB_LOG_LINES). */
  omitted: number;
}

export interface SnapshotJob {
  action: SnapshotAction;
  result?: SnapshotResult;
}

export type PointStatus = 'COMPLETED';

export interface RecoveryPoint {
  recoveryPointId: string;
  target: string;
  platform: string;
  agent: string;
  jobId: string;
  status: PointStatus;
  createdAt: string;
  completedAt: string;
  durationMs: number;
  bytesRead: number;
  bytesNew: number;
  bytesStored: number;
  streams: StreamSummary[];
  manifestKey: string;
  summary: Record<string, string | number | boolean>;
  /** E.g. `pre-update`, for points made by `stowage protect-update`. */
  label?: string;
  /** The policy whose run made it. */
  policy?: string;
  /** When a verify of it last succeeded. */
  verifiedAt?: string;
  /** The last restore test of it (`stowage restore-test`), passed or not. */
  restoreTest?: RestoreTestRecord;
  /** The parts of the target it lacks because they failed (a vApp's child VM); never silent. */
  failures?: PartFailure[];
}

/** A restore test as the point records it. */
export interface RestoreTestRecord extends Omit<
  RestoreTestOutcome,
  'rtoMs' | 'restoreMs' | 'removed'
> {
  jobId: string;
  testedAt: string;
  /** Absent when the test failed before the sandbox ran. */
  rtoMs?: number;
  restoreMs?: number;
  /** Absent when the agent did not report (its task failed): its hold journal removes it. */
  removed?: boolean;
}

/** Retention rules with restic's meaning (functions/core/retention.ts). */
export interface RetentionRules {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  /** restic's duration: `1y2m3d4h`. */
  keepWithin?: string;
}

/**
 * A policy: what to back up (targets and selectors), when (an EventBridge Scheduler expression
 * in a time zone, kernel/schedule.ts), how (backup options) and how long to keep what it makes.
 */
export interface Policy {
  name: string;
  /** `docker:web`, `docker-compose:shop`, or a selector `docker:app=shop`. */
  targets: string[];
  schedule: string;
  timezone: string;
  /** EventBridge Scheduler's flexible time window, in minutes (0: off). */
  flexibleWindowMinutes: number;
  retention: RetentionRules;
  options: BackupRequestOptions;
  /** Every Nth backup of the policy is followed by a verify of its points. */
  verifyEvery?: number;
  /** Every Nth backup of the policy is followed by a restore test of its Docker and LXD points. */
  restoreTestEvery?: number;
  /** The probe those restore tests run inside the sandbox (`sh -c`). */
  restoreTestProbe?: string;
  createdAt: string;
  /** When the schedule last changed: a rate() counts from here. */
  updatedAt: string;
  /** Runs started so far (for --verify-every). */
  runs: number;
  lastRunAt?: string;
  lastJobId?: string;
  /** When the scheduler expects the next run. */
  nextRunAt?: string;
  /** Why the policy is flagged (a missed slot, a failed last run); absent when all is well. */
  flag?: string;
}

export interface InventoryTarget {
  target: string;
  platform: string;
  name: string;
  state: string;
  details?: Record<string, string>;
  /** Local snapshots (fast tier), for targets whose driver has them; none past their expiry. */
  snapshots?: SnapshotInfo[];
  /** The engine's own snapshot schedule of this target, when one is set. */
  snapshotSchedule?: SnapshotSchedule;
  /** Engine labels (Docker), which backups by label selector match. */
  labels?: Record<string, string>;
}

/** What an agent last reported about itself and what it sees. */
export interface AgentRecord {
  agent: string;
  platforms: string[];
  targets: InventoryTarget[];
  seenAt: string;
  version: string;
}
