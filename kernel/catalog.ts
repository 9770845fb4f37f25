/**
 * The catalog port. Every write is a single-item conditional write that is safe to retry (the
 * local DynamoDB has no transactions, and Step Functions retries Lambda tasks).
 */
import type {
  AgentRecord,
  Job,
  JobItem,
  JobProgress,
  Policy,
  RecoveryPoint,
  TaskLogBatch,
  TaskRecord,
} from './model';
import type { JobStatus } from '../statemachines/contracts';

export interface JobUpdate {
  status?: JobStatus;
  startedAt?: string;
  endedAt?: string;
  executionArn?: string;
  error?: Job['error'];
  progress?: JobProgress;
  snapshot?: Job['snapshot'];
  recoveryPointId?: string;
  warnings?: string[];
  items?: JobItem[];
  prune?: Job['prune'];
  restoreTest?: Job['restoreTest'];
  checks?: Job['checks'];
  pointOfNoReturnAt?: string;
  cancelRequestedAt?: string;
}

/** The fields of one job item that change while the job runs. */
export type JobItemUpdate = Partial<Pick<JobItem, 'status' | 'progress' | 'error'>>;

/**
 * One task an agent claimed: the site (agent) that claimed it, its job and the claim id. What an
 * agent writes while it runs a task (taking its run token, its progress, its point of no return,
 * its end) goes to its claim's record, kept under its own site (in DynamoDB the partition
 * `SITE#<site>#JOB#<jobId>`), so a site's IAM role can update its own claims and nothing else;
 * the job's record is written by the control plane alone.
 */
export interface ClaimRef {
  site: string;
  jobId: string;
  claimId: string;
}

/** What an agent reported on one claim, as readers fold it into the job (`withTaskReports`). */
export interface TaskReport {
  claimId: string;
  site: string;
  /** The job item (a backup's target) the task works on. */
  itemIndex?: number;
  progress?: JobProgress;
  pointOfNoReturnAt?: string;
  endedAt?: string;
}

export { SITE_NAME } from './resources';

const newer = (a: JobProgress | undefined, b: JobProgress | undefined) =>
  !a ? b : !b ? a : b.updatedAt > a.updatedAt ? b : a;

/**
 * The job as its readers see it: its record, with what its tasks' agents reported folded in.
 * The newest progress (by `updatedAt`) wins, the job's own (the control plane writes a final
 * one when the job ends) or an agent's; a backup item an agent reports on is RUNNING while the
 * record still has it PENDING; the job is past its point of no return once a claim is.
 */
export function withTaskReports(job: Job, reports: readonly TaskReport[]): Job {
  if (reports.length === 0) return job;
  let progress = job.progress;
  let pointOfNoReturnAt = job.pointOfNoReturnAt;
  const items = job.items?.map((item) => ({ ...item }));
  for (const report of reports) {
    progress = newer(progress, report.progress);
    if (
      report.pointOfNoReturnAt &&
      (!pointOfNoReturnAt || report.pointOfNoReturnAt < pointOfNoReturnAt)
    ) {
      pointOfNoReturnAt = report.pointOfNoReturnAt;
    }
    const item = report.itemIndex === undefined ? undefined : items?.[report.itemIndex];
    if (item && report.progress) {
      const latest = newer(item.progress, report.progress);
      if (latest) item.progress = latest;
      if (item.status === 'PENDING' && !report.endedAt) item.status = 'RUNNING';
    }
  }
  return {
    ...job,
    ...(progress ? { progress } : {}),
    ...(pointOfNoReturnAt ? { pointOfNoReturnAt } : {}),
    ...(items ? { items } : {}),
  };
}

export interface Catalog {
  /** Creates the job; ConflictError if the id exists. */
  createJob(job: Job): Promise<void>;
  getJob(jobId: string): Promise<Job | undefined>;
  /** Newest first. */
  listJobs(options?: { limit?: number }): Promise<Job[]>;
  /**
   * Applies `update` only while the job's status is one of `whenStatus`; returns the job after
   * the write, or undefined when the condition did not hold (the caller decides if that is fine).
   */
  updateJob(
    jobId: string,
    update: JobUpdate,
    whenStatus: readonly JobStatus[],
  ): Promise<Job | undefined>;
  /**
   * Sets fields of item `index` of the job, only while the job's status is one of `whenStatus`
   * and the item exists; returns whether it wrote. Writes to different items never overwrite
   * each other (agents report progress of items concurrently with commits of others).
   */
  updateJobItem(
    jobId: string,
    index: number,
    update: JobItemUpdate,
    whenStatus: readonly JobStatus[],
  ): Promise<boolean>;
  /**
   * Cancels the job: first each of its claims is marked cancelled, conditionally on the claim not
   * being past its point of no return (the agent's mark is conditional the other way, so exactly
   * one of the two wins each claim); then, only if no claim had passed it, the job becomes
   * CANCELLED with `end` in one conditional write (while it is PENDING or RUNNING, has the same
   * claims as were marked, and has no `pointOfNoReturnAt`), with every item that is not COMPLETED
   * (an item that completes or a claim handed over meanwhile makes it try again). Returns the job
   * after the write, or undefined when it is missing, ended, or past its point of no return.
   */
  cancelJob(
    jobId: string,
    end: { endedAt: string; error: NonNullable<Job['error']>; cancelRequestedAt: string },
  ): Promise<Job | undefined>;
  /** Writes the point unless a point of that id from another job exists (ConflictError). */
  putPoint(point: RecoveryPoint): Promise<void>;
  getPoint(recoveryPointId: string): Promise<RecoveryPoint | undefined>;
  /** Newest first; all targets when `target` is absent. */
  listPoints(options?: { target?: string; limit?: number }): Promise<RecoveryPoint[]>;
  /** Removes the point's item; idempotent. */
  deletePoint(recoveryPointId: string): Promise<void>;
  /** Sets fields of an existing point (a verify's time); false when there is no such point. */
  updatePoint(
    recoveryPointId: string,
    update: Partial<Pick<RecoveryPoint, 'verifiedAt' | 'restoreTest'>>,
  ): Promise<boolean>;
  /** Creates the policy; ConflictError if one of that name exists. */
  createPolicy(policy: Policy): Promise<void>;
  /** Replaces an existing policy; NotFoundError if there is none of that name. */
  replacePolicy(policy: Policy): Promise<void>;
  /** Sets fields of an existing policy (the scheduler's bookkeeping); false when it is gone. */
  updatePolicy(
    name: string,
    update: Partial<Pick<Policy, 'runs' | 'lastRunAt' | 'lastJobId' | 'nextRunAt'>> & {
      flag?: string | null;
    },
  ): Promise<boolean>;
  getPolicy(name: string): Promise<Policy | undefined>;
  /** By name. */
  listPolicies(): Promise<Policy[]>;
  /** Idempotent. */
  deletePolicy(name: string): Promise<void>;
  /**
   * The job's record alone, without what its tasks reported: what an agent reads to know
   * whether the job still runs (its role may read job records, not other sites' claims).
   */
  getJobRecord(jobId: string): Promise<Job | undefined>;
  /**
   * Hands a claimed task's run token to the agent that claimed it (the hand-over step of the
   * workflows): records the claim on the job, only while the job is PENDING or RUNNING, then
   * stores the token on the claim, unless a cancel got to the claim first. ConflictError in
   * either case (the task must not run). A retried hand-over overwrites the token with the newer.
   */
  putRunToken(claim: ClaimRef, taskToken: string): Promise<void>;
  /**
   * The run token handed over for a claim, removed as it is read (the claim then records the
   * site as its agent and when it took the task); undefined until it is there, and once taken.
   * Written by the claim's agent.
   */
  takeRunToken(claim: ClaimRef): Promise<string | undefined>;
  /** The agent's latest progress on its claim (and the job item it works on); no-op once gone. */
  reportProgress(claim: ClaimRef, progress: JobProgress, itemIndex?: number): Promise<void>;
  /**
   * Marks the claim past its point of no return (an in-place restore about to replace its
   * target), unless the job's cancel got to the claim first: true when marked. One conditional
   * write on the claim, as a cancel's is, so the two never both win. Written by its agent.
   */
  markPointOfNoReturn(claim: ClaimRef, at: string): Promise<boolean>;
  /** Records that a taken task ended (its holds released) and how; idempotent. Its agent's. */
  endTask(
    claim: ClaimRef,
    end: { endedAt: string; outcome: NonNullable<TaskRecord['outcome']> },
  ): Promise<void>;
  /** Every task handed over for the job, oldest first. */
  listTasks(jobId: string): Promise<TaskRecord[]>;
  /**
   * Stores one batch of a task's log lines (agents/core/task-log.ts). Written once per claim
   * and `seq`: a retried write of a batch that landed changes nothing. Written by the claim's
   * agent, in its own site's partition of the job, as its other reports on the claim.
   */
  appendTaskLog(claim: ClaimRef, batch: TaskLogBatch): Promise<void>;
  /** Every log batch of the claims the job lists, by claim id, then `seq`. */
  listTaskLogs(jobId: string): Promise<TaskLogBatch[]>;
  putAgent(agent: AgentRecord): Promise<void>;
  getAgent(agent: string): Promise<AgentRecord | undefined>;
  listAgents(): Promise<AgentRecord[]>;
}
