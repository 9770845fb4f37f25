/**
 * Local mode's scheduler: what EventBridge Scheduler does in AWS, inside `stowage start`. Every
 * tick it reads the policies from the catalog and runs each whose next slot (kernel/schedule.ts,
 * counted from its last run, or from its last change for a new policy) has come. A policy whose
 * slots passed while `stowage start` was down runs once on the first tick, not once per missed
 * slot: after a run the next slot is counted from that run. A run that could not start a target
 * is flagged on the policy (`stowage policy list`); a missed or failed run is flagged when the
 * policy is read (functions/core/policies.ts).
 *
 * It also runs the daily prune (`STOWAGE_PRUNE_SCHEDULE`, default `cron(0 4 * * ? *)` UTC, `off`
 * for none), as the stack's `stowage_prune` schedule does in AWS; a missed one runs once on start.
 *
 * `--verify-every N` and `--restore-test-every N` are not the scheduler's business: runPolicy
 * asks every Nth run's backup jobs for the checks, and the backup workflow starts them once a
 * job ended (functions/core/checks.ts), here as in AWS.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../kernel/logger';
import { nextFireTime, parseSchedule } from '../kernel/schedule';
import type { JobChecks } from '../kernel/model';
import { nextRunOf, runPolicy, type PolicyDeps } from '../functions/core/policies';
import type { JobAccepted, RequestDeps } from '../functions/core/requests/launch';

/** The daily prune (what the stack's `stowage_prune` schedule does in AWS). */
export interface ScheduledPrune {
  /** An EventBridge Scheduler expression, in UTC (`cron(0 4 * * ? *)`). */
  schedule: string;
  /** Where the time of the last scheduled prune is kept across restarts (a JSON file). */
  statePath: string;
  run(): Promise<{ jobId: string } | { skipped: string }>;
}

export interface SchedulerOptions {
  deps: PolicyDeps;
  /** The daily prune; none: no scheduled prune. */
  prune?: ScheduledPrune;
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

  /** When the scheduled prune last ran (or the scheduler first started). */
  private lastPruneAt: string | undefined;

  /**
   * Runs the daily prune when its slot has come since the last one: a slot (or several) missed
   * while `stowage start` was down runs once on start, as a policy's does.
   */
  private async pruneIfDue(now: number): Promise<void> {
    const prune = this.options.prune;
    if (!prune) return;
    if (this.lastPruneAt === undefined) {
      try {
        const state = JSON.parse(readFileSync(prune.statePath, 'utf8')) as {
          lastPruneAt?: unknown;
        };
        if (typeof state.lastPruneAt === 'string') this.lastPruneAt = state.lastPruneAt;
      } catch {
        // First start: the first prune is at the next slot.
      }
      if (this.lastPruneAt === undefined) this.savePruneState(new Date(now).toISOString());
    }
    const due = nextFireTime(parseSchedule(prune.schedule), {
      after: new Date(this.lastPruneAt!),
      timezone: 'UTC',
    });
    if (!due || due.getTime() > now) return;
    // Recorded before it runs: a prune that cannot start is not retried every tick.
    this.savePruneState(new Date(now).toISOString());
    try {
      const out = await prune.run();
      this.options.log.info('scheduler.prune_ran', { due: due.toISOString(), ...out });
    } catch (err) {
      this.options.log.warn('scheduler.prune_not_started', { due: due.toISOString(), error: err });
    }
  }

  private savePruneState(at: string): void {
    this.lastPruneAt = at;
    const path = this.options.prune!.statePath;
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${JSON.stringify({ lastPruneAt: at })}\n`);
  }

  private async pass(): Promise<void> {
    const { deps, log } = this.options;
    const now = Date.parse(deps.clock.now());
    await this.pruneIfDue(now);
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
