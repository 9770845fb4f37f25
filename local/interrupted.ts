/**
 * What `stowage start` settles, on start, of the work its previous process left unfinished. Its
 * local Step Functions cannot resume an execution (local/sfn/engine.ts records those that were
 * running as ABORTED), so:
 *
 * - a job whose execution was running ends FAILED, `Interrupted`: run it again;
 * - a job left PENDING with no execution at all (the process stopped between recording the job
 *   and starting its workflow: milliseconds, unless it was a check being started) ends FAILED
 *   the same way, instead of showing PENDING for ever;
 * - a backup whose workflow stopped after the job ended but before its `Start checks` state ran
 *   (a `--verify-every` or `--restore-test-every` run) has those checks started now: the job
 *   ended, its point is kept, and nothing it asked for is lost. startChecks is idempotent, so
 *   checks already started are not started twice.
 */
import { startChecks, type ChecksDeps } from '../functions/core/checks';
import { markJobFailed } from '../functions/core/jobs';
import type { Logger } from '../kernel/logger';

export interface InterruptedWork {
  /** Executions that were running when the previous process stopped, with their machine's ARN. */
  orphans: ReadonlyArray<{ stateMachineArn: string; input: string }>;
  /** Whether the local Step Functions ever ran an execution named `name` (a job's id). */
  hasExecutionNamed(name: string): boolean;
  /** The backup workflow's state machine ARN. */
  backupStateMachineArn: string;
  /** When this process started: a PENDING job recorded later is this process's own. */
  startedAt: string;
}

export interface InterruptedSettled {
  /** Jobs ended FAILED, Interrupted. */
  failed: string[];
  /** Checks started for backups whose workflow stopped before starting them. */
  checksStarted: Array<{ backupJobId: string; kind: string; jobId: string }>;
}

/** How many of the newest jobs are looked at for one left PENDING (they are the newest ones). */
const PENDING_SCAN = 1000;

export async function settleInterrupted(
  deps: ChecksDeps & { log: Logger },
  work: InterruptedWork,
): Promise<InterruptedSettled> {
  const out: InterruptedSettled = { failed: [], checksStarted: [] };
  const fail = async (jobId: string, message: string) => {
    try {
      const job = await markJobFailed(deps, jobId, { name: 'Interrupted', message });
      if (job.status === 'FAILED' && job.error?.name === 'Interrupted') out.failed.push(jobId);
    } catch (err) {
      deps.log.warn('start.interrupted_job_not_settled', { jobId, error: err });
    }
  };

  for (const job of await deps.catalog.listJobs({ limit: PENDING_SCAN })) {
    if (job.status !== 'PENDING' || job.createdAt >= work.startedAt) continue;
    if (work.hasExecutionNamed(job.jobId)) continue; // an orphan: below
    await fail(job.jobId, 'stowage start stopped before this job started; run it again');
  }

  const backups: string[] = [];
  for (const orphan of work.orphans) {
    let jobId: unknown;
    try {
      jobId = (JSON.parse(orphan.input) as { jobId?: unknown }).jobId;
    } catch {
      continue;
    }
    if (typeof jobId !== 'string') continue;
    await fail(jobId, 'stowage start stopped while this job ran; run it again');
    if (orphan.stateMachineArn === work.backupStateMachineArn) backups.push(jobId);
  }
  for (const backupJobId of backups) {
    try {
      const { started, refused } = await startChecks(deps, backupJobId);
      for (const s of started)
        out.checksStarted.push({ backupJobId, kind: s.kind, jobId: s.jobId });
      if (refused.length > 0) deps.log.warn('start.checks_refused', { backupJobId, refused });
    } catch (err) {
      deps.log.warn('start.checks_not_started', { backupJobId, error: err });
    }
  }
  if (out.failed.length > 0 || out.checksStarted.length > 0) {
    deps.log.warn('start.interrupted_work_settled', { ...out });
  }
  return out;
}
