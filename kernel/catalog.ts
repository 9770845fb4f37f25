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
   * Cancels the job in one conditional write: only while its status is PENDING or RUNNING and it
   * has not passed a point of no return (`pointOfNoReturnAt`), it becomes CANCELLED with `end`,
   * and every item that is not COMPLETED becomes CANCELLED (an item that completes meanwhile
   * makes the write try again and stay COMPLETED). Returns the job after the write, or undefined
   * when it is missing, ended, or past its point of no return.
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
   * Stores the run token of a claimed task for the agent that claimed it (the hand-over step of
   * the workflows). A retried hand-over overwrites the token with the newer one.
   */
  putRunToken(jobId: string, claimId: string, taskToken: string): Promise<void>;
  /**
   * The run token handed over for a claim, removed as it is read (the claim then records `agent`
   * and when it took the task); undefined until it is there, and once it was taken.
   */
  takeRunToken(jobId: string, claimId: string, agent?: string): Promise<string | undefined>;
  /** Records that a taken task ended (its holds released) and how; idempotent. */
  endTask(
    jobId: string,
    claimId: string,
    end: { endedAt: string; outcome: NonNullable<TaskRecord['outcome']> },
  ): Promise<void>;
  /** Every task handed over for the job, oldest first. */
  listTasks(jobId: string): Promise<TaskRecord[]>;
  putAgent(agent: AgentRecord): Promise<void>;
  getAgent(agent: string): Promise<AgentRecord | undefined>;
  listAgents(): Promise<AgentRecord[]>;
}
