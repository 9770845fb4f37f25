/**
 * Local mode's scheduler: what EventBridge Scheduler does in AWS, inside `stowage start`. Every
 * tick it reads the policies from the catalog and runs each whose next slot (kernel/schedule.ts,
 * counted from its last run, or from its last change for a new policy) has come. A policy whose
 * slots passed while `stowage start` was down runs once on the first tick, not once per missed
 * slot: after a run the next slot is counted from that run. A run that could not start a target
 * is flagged on the policy (`stowage policy list`); a missed or failed run is flagged when the
 * policy is read (functions/core/policies.ts).
 *
 * `--verify-every N` and `--restore-test-every N` are not the scheduler's business: runPolicy
 * asks every Nth run's backup jobs for the checks, and the backup workflow starts them once a
 * job ended (functions/core/checks.ts), here as in AWS.
 */
import type { Logger } from '../kernel/logger';
import type { JobChecks } from '../kernel/model';
import { nextRunOf, runPolicy, type PolicyDeps } from '../functions/core/policies';
import type { JobAccepted, RequestDeps } from '../functions/core/requests/launch';

export interface SchedulerOptions {
  deps: PolicyDeps;
  requestBackup(
    deps: RequestDeps,
    body: unknown,
    extra?: { checks?: JobChecks },
  ): Promise<JobAccepted>;
  log: Logger;
  /** How often the policies are looked at (default 5 s; tests use less). */
  tickMs?: number;
}

export const DEFAULT_TICK_MS = 5_000;

export class LocalScheduler {
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;

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
        verify: run.verify,
        restoreTest: run.restoreTest,
      });
    }
  }
}
