/**
 * Local mode's scheduler: what EventBridge Scheduler does in AWS, inside `stowage start`. Every
 * tick it reads the policies from the catalog and runs each whose next slot (kernel/schedule.ts,
 * counted from its last run, or from its last change for a new policy) has come. A policy whose
 * slots passed while `stowage start` was down runs once on the first tick, not once per missed
 * slot: after a run the next slot is counted from that run. A run that could not start a target
 * is flagged on the policy (`stowage policy list`); a missed or failed run is flagged when the
 * policy is read (functions/core/policies.ts).
 *
 * `--verify-every N`: the jobs of every Nth run are watched, and once one has succeeded each of
 * its points is verified. `--restore-test-every N` likewise restore-tests each Docker and LXD
 * point of every Nth run (with the policy's probe).
 */
import type { Logger } from '../kernel/logger';
import { nextRunOf, runPolicy, type PolicyDeps } from '../functions/core/policies';
import type { JobAccepted, RequestDeps } from '../functions/core/requests/launch';

export interface SchedulerOptions {
  deps: PolicyDeps;
  requestBackup(deps: RequestDeps, body: unknown): Promise<JobAccepted>;
  requestVerify(deps: RequestDeps, body: { recoveryPointId: string }): Promise<JobAccepted>;
  requestRestoreTest?(
    deps: RequestDeps,
    body: { recoveryPointId: string; probe?: string },
  ): Promise<JobAccepted>;
  log: Logger;
  /** How often the policies are looked at (default 5 s; tests use less). */
  tickMs?: number;
}

export const DEFAULT_TICK_MS = 5_000;

export class LocalScheduler {
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  /** Jobs of runs whose points are to be verified once they succeed. */
  private readonly toVerify = new Set<string>();
  /** Jobs of runs whose points are to be restore-tested once they succeed, with the probe. */
  private readonly toRestoreTest = new Map<string, string | undefined>();

  constructor(private readonly options: SchedulerOptions) {}

  /** Ticks at once (a slot missed while down runs now), then every tickMs. */
  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.options.tickMs ?? DEFAULT_TICK_MS);
    this.timer.unref?.();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
  }

  /** One pass; never two at once. */
  tick(): Promise<void> {
    this.ticking ??= this.pass()
      .catch((err: unknown) => this.options.log.warn('scheduler.tick_failed', { error: err }))
      .finally(() => {
        this.ticking = undefined;
      });
    return this.ticking;
  }

  private async pass(): Promise<void> {
    const { deps, log } = this.options;
    const now = Date.parse(deps.clock.now());
    for (const policy of await deps.catalog.listPolicies()) {
      let due: Date | undefined;
      try {
        due = nextRunOf(policy);
      } catch (err) {
        log.warn('scheduler.bad_policy', { policy: policy.name, error: err });
        continue;
      }
      if (!due || due.getTime() > now) continue;
      const run = await runPolicy(deps, policy.name, this.options.requestBackup);
      log.info('scheduler.policy_ran', {
        policy: policy.name,
        due: due.toISOString(),
        jobs: run.jobs.map((j) => j.jobId),
        refused: run.refused,
      });
      if (run.verify) for (const job of run.jobs) this.toVerify.add(job.jobId);
      if (run.restoreTest && this.options.requestRestoreTest) {
        for (const job of run.jobs) this.toRestoreTest.set(job.jobId, run.restoreTestProbe);
      }
    }
    await this.restoreTestRuns();
    for (const jobId of [...this.toVerify]) {
      const job = await deps.catalog.getJob(jobId);
      if (!job || ['FAILED', 'CANCELLED'].includes(job.status)) {
        this.toVerify.delete(jobId);
        continue;
      }
      if (job.status !== 'SUCCEEDED' && job.status !== 'PARTIALLY_FAILED') continue;
      this.toVerify.delete(jobId);
      for (const item of job.items ?? []) {
        if (item.status !== 'COMPLETED') continue;
        const verify = await this.options
          .requestVerify(deps, { recoveryPointId: item.recoveryPointId })
          .catch((err: unknown) => {
            log.warn('scheduler.verify_not_started', { jobId, error: err });
            return undefined;
          });
        if (verify)
          log.info('scheduler.verify_started', { policy: job.policy, jobId: verify.jobId });
      }
    }
  }

  /** Restore-tests the Docker and LXD points of the runs waiting for it, once they succeeded. */
  private async restoreTestRuns(): Promise<void> {
    const { deps, log } = this.options;
    const requestRestoreTest = this.options.requestRestoreTest;
    if (!requestRestoreTest) return;
    for (const [jobId, probe] of [...this.toRestoreTest]) {
      const job = await deps.catalog.getJob(jobId);
      if (!job || ['FAILED', 'CANCELLED'].includes(job.status)) {
        this.toRestoreTest.delete(jobId);
        continue;
      }
      if (job.status !== 'SUCCEEDED' && job.status !== 'PARTIALLY_FAILED') continue;
      this.toRestoreTest.delete(jobId);
      for (const item of job.items ?? []) {
        const platform = item.target.slice(0, item.target.indexOf(':'));
        if (item.status !== 'COMPLETED' || !['docker', 'lxd'].includes(platform)) continue;
        const test = await requestRestoreTest(deps, {
          recoveryPointId: item.recoveryPointId,
          ...(probe !== undefined ? { probe } : {}),
        }).catch((err: unknown) => {
          log.warn('scheduler.restore_test_not_started', { jobId, error: err });
          return undefined;
        });
        if (test) {
          log.info('scheduler.restore_test_started', { policy: job.policy, jobId: test.jobId });
        }
      }
    }
  }
}
