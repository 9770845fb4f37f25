/**
 * A job's workflow history: the states its Step Functions execution went through, as the Step
 * Functions console shows them (GET /jobs/{id}/history). Read-only; the events come through the
 * ExecutionHistory port (GetExecutionHistory in AWS and in local mode's Step Functions endpoint).
 */
import type { Catalog } from '../../kernel/catalog';
import { NotFoundError } from '../../kernel/errors';

/** One history event, flattened: the state it concerns and, for a failure, its error and cause. */
export interface WorkflowEvent {
  id: number;
  timestamp: string;
  type: string;
  /** The state entered or exited (or retried, caught, failed in). */
  state?: string;
  error?: string;
  cause?: string;
}

/** Port: an execution's events in the order Step Functions records them (oldest first). */
export interface ExecutionHistory {
  events(executionArn: string): Promise<WorkflowEvent[]>;
}

export interface JobHistory {
  jobId: string;
  /** Absent while the job has no execution yet (it is PENDING, or its workflow never started). */
  executionArn?: string;
  events: WorkflowEvent[];
}

export async function getJobHistory(
  deps: { catalog: Catalog; history?: ExecutionHistory },
  jobId: string,
): Promise<JobHistory> {
  const job = await deps.catalog.getJob(jobId);
  if (!job) throw new NotFoundError(`no such job: ${jobId}`);
  if (!job.executionArn || !deps.history) return { jobId, events: [] };
  return {
    jobId,
    executionArn: job.executionArn,
    events: await deps.history.events(job.executionArn),
  };
}
