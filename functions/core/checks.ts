/**
 * `--verify-every N` and `--restore-test-every N`: the same in AWS and in local mode, because
 * both run the same code and the same workflow. A policy's run (runPolicy, policies.ts) counts
 * the policy's runs; on every Nth it asks its backup jobs for checks (Job.checks, recorded with
 * the PENDING job and passed in the execution input). The backup workflow, once the job ended
 * with at least one point, runs the start-checks Lambda (backup.asl.json, `Start checks`), which
 * calls `startChecks`: a verify of every point the job completed, a restore test of every
 * Docker and LXD one (with the policy's probe).
 *
 * Idempotent: every check started (or refused, with why) is recorded on the backup job, and a
 * retried call starts only those not recorded yet (one whose record was lost to a crash between
 * the start and the write is started twice, which costs a second read of the point, nothing
 * else). A check that cannot start does not fail the backup: it is recorded with its error.
 */
import type { Job, JobChecks } from '../../kernel/model';
import { NotFoundError } from '../../kernel/errors';
import type { JobAccepted, RequestDeps } from './requests/launch';
import { requestRestoreTest, RESTORE_TEST_PLATFORMS } from './requests/restore-test';
import { requestVerify } from './requests/verify';

const ENDED_WITH_POINTS = ['SUCCEEDED', 'PARTIALLY_FAILED'];

export interface ChecksStarted {
  jobId: string;
  /** Checks started by this call. */
  started: Array<{ kind: 'VERIFY' | 'RESTORE_TEST'; recoveryPointId: string; jobId: string }>;
  /** Checks that could not start, with why. */
  refused: Array<{ kind: 'VERIFY' | 'RESTORE_TEST'; recoveryPointId: string; error: string }>;
}

export interface ChecksDeps extends RequestDeps {
  requestVerify?: (deps: RequestDeps, body: { recoveryPointId: string }) => Promise<JobAccepted>;
  requestRestoreTest?: (
    deps: RequestDeps,
    body: { recoveryPointId: string; probe?: string },
  ) => Promise<JobAccepted>;
}

/** The checks a run asks for: undefined when it asks none (an Nth run of neither). */
export function checksOfRun(policy: {
  runs: number;
  verifyEvery?: number;
  restoreTestEvery?: number;
  restoreTestProbe?: string;
}): JobChecks | undefined {
  const verify = policy.verifyEvery !== undefined && policy.runs % policy.verifyEvery === 0;
  const restoreTest =
    policy.restoreTestEvery !== undefined && policy.runs % policy.restoreTestEvery === 0;
  if (!verify && !restoreTest) return undefined;
  return {
    ...(verify ? { verify } : {}),
    ...(restoreTest ? { restoreTest } : {}),
    ...(restoreTest && policy.restoreTestProbe ? { probe: policy.restoreTestProbe } : {}),
  };
}

/** Starts the checks the backup job `jobId` asked for on the points it completed. */
export async function startChecks(deps: ChecksDeps, jobId: string): Promise<ChecksStarted> {
  const job = await deps.catalog.getJob(jobId);
  if (!job) throw new NotFoundError(`job ${jobId} does not exist`);
  const out: ChecksStarted = { jobId, started: [], refused: [] };
  const checks = job.checks;
  if (!checks || !ENDED_WITH_POINTS.includes(job.status)) return out;
  const verify = deps.requestVerify ?? requestVerify;
  const restoreTest = deps.requestRestoreTest ?? requestRestoreTest;
  const recorded = [...(checks.started ?? [])];
  const done = new Set(recorded.map((c) => `${c.kind} ${c.recoveryPointId}`));
  for (const item of job.items ?? []) {
    if (item.status !== 'COMPLETED') continue;
    const platform = item.target.slice(0, item.target.indexOf(':'));
    const wanted: Array<'VERIFY' | 'RESTORE_TEST'> = [
      ...(checks.verify ? (['VERIFY'] as const) : []),
      ...(checks.restoreTest && RESTORE_TEST_PLATFORMS.includes(platform)
        ? (['RESTORE_TEST'] as const)
        : []),
    ];
    for (const kind of wanted) {
      if (done.has(`${kind} ${item.recoveryPointId}`)) continue;
      const { recoveryPointId } = item;
      try {
        const started =
          kind === 'VERIFY'
            ? await verify(deps, { recoveryPointId })
            : await restoreTest(deps, {
                recoveryPointId,
                ...(checks.probe !== undefined ? { probe: checks.probe } : {}),
              });
        out.started.push({ kind, recoveryPointId, jobId: started.jobId });
        recorded.push({ kind, recoveryPointId, jobId: started.jobId });
      } catch (err) {
        const error = `${(err as Error).name}: ${(err as Error).message}`;
        out.refused.push({ kind, recoveryPointId, error });
        recorded.push({ kind, recoveryPointId, error });
      }
      await record(deps, job, { ...checks, started: recorded });
    }
  }
  return out;
}

async function record(deps: RequestDeps, job: Job, checks: JobChecks): Promise<void> {
  await deps.catalog.updateJob(job.jobId, { checks }, [job.status]);
}
