/**
 * Policies: targets (names and selectors), a schedule in EventBridge Scheduler's syntax with a
 * time zone, backup options, retention, and every Nth backup verified. The API validates and
 * stores them; in AWS each is one EventBridge Scheduler schedule (the Schedules port, created,
 * updated and deleted with the policy) that invokes the run-policy Lambda; in local mode
 * local/scheduler.ts fires the same expressions. A run starts one backup job per target or
 * selector of the policy, each of whose points records the policy.
 *
 * Whether a policy needs attention is computed when it is read, from its schedule and its last
 * run, so AWS and local mode flag the same things: a run expected but not started within its
 * window (plus a minute), or a last run that failed.
 */
import type { Catalog } from '../../kernel/catalog';
import type { Job, JobChecks, Policy, RetentionRules } from '../../kernel/model';
import { NotFoundError, ValidationError } from '../../kernel/errors';
import {
  checkTimezone,
  DEFAULT_TIMEZONE,
  nextFireTime,
  parseSchedule,
} from '../../kernel/schedule';
import { checkTargetName, parseSelector, parseTarget, targetKey } from '../../kernel/targets';
import type { BackupRequestOptions } from '../../statemachines/contracts';
import { checkRetentionRules } from './retention';
import { checksOfRun } from './checks';
import type { JobAccepted, RequestDeps } from './requests/launch';
import type { PolicyEvent } from './job-events';
import { POLICY_EVENTS } from '../../kernel/resources';
import { parseRequestBody, platformOptions } from './requests/body';

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const MISSED_GRACE_MS = 60_000;
const FAILED = ['FAILED', 'PARTIALLY_FAILED', 'CANCELLED'];

/** Where a policy's schedule lives in AWS (EventBridge Scheduler); a no-op in local mode. */
export interface Schedules {
  put(policy: Policy): Promise<void>;
  delete(name: string): Promise<void>;
}

export const noSchedules: Schedules = { put: async () => undefined, delete: async () => undefined };

export interface PolicyDeps extends RequestDeps {
  schedules: Schedules;
}

function bad(message: string): ValidationError {
  return new ValidationError(message);
}

/** The targets, checked: names canonical (`docker:web`), selectors as written. */
function checkTargets(raw: unknown): string[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > 100) {
    throw bad(
      'give 1 to 100 targets: names (docker:web, docker-compose:shop) or selectors (docker:app=shop)',
    );
  }
  const out: string[] = [];
  for (const t of raw) {
    if (typeof t !== 'string' || t === '')
      throw bad('every target is a string: "docker:web" or "docker:app=shop"');
    if (t.slice(t.indexOf(':') + 1).includes('=')) {
      out.push(parseSelector(t).text);
    } else {
      const ref = parseTarget(t);
      checkTargetName(ref);
      out.push(`${targetKey(ref)}${ref.agent ? `@${ref.agent}` : ''}`);
    }
  }
  return [...new Set(out)];
}

const RETENTION_KEYS = [
  'keepLast',
  'keepHourly',
  'keepDaily',
  'keepWeekly',
  'keepMonthly',
  'keepYearly',
  'keepWithin',
] as const;

function checkRetention(raw: unknown): RetentionRules {
  if (raw === undefined) return {};
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw bad('retention must be an object');
  const unknown = Object.keys(raw).filter(
    (k) => !(RETENTION_KEYS as readonly string[]).includes(k),
  );
  if (unknown.length)
    throw bad(`unknown retention rule ${unknown.join(', ')}; use ${RETENTION_KEYS.join(', ')}`);
  try {
    return checkRetentionRules(raw as RetentionRules);
  } catch (err) {
    throw bad((err as Error).message);
  }
}

/**
 * A policy's backup options, read as a backup request's are (the platforms' own option
 * schemas, strictly); whether each fits every target of the policy is checked with the
 * targets (optionsFitTargets).
 */
function checkOptions(raw: unknown): BackupRequestOptions {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw bad('options must be an object');
  try {
    return parseRequestBody('backup', {}, raw).options as BackupRequestOptions;
  } catch (err) {
    throw bad(`options: ${(err as Error).message}`);
  }
}

/** Refuses options that a target's platform does not take ("disks apply to vSphere VMs, ..."). */
function optionsFitTargets(options: BackupRequestOptions, targets: readonly string[]): void {
  for (const t of targets) {
    const platform = t.slice(t.indexOf(':') + 1).includes('=')
      ? parseSelector(t).platform
      : parseTarget(t).platform;
    try {
      platformOptions('backup', platform, options as Record<string, unknown>, t);
    } catch (err) {
      throw bad(`options: ${(err as Error).message} (target ${t})`);
    }
  }
}

function checkInteger(raw: unknown, what: string, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  if (!Number.isSafeInteger(raw) || (raw as number) < min || (raw as number) > max) {
    throw bad(`${what} must be a whole number from ${min} to ${max}`);
  }
  return raw as number;
}

/** The fields a create or update may set, checked (undefined where not given). */
function checkFields(body: Record<string, unknown>, creating: boolean) {
  const allowed = [
    'name',
    'targets',
    'schedule',
    'timezone',
    'flexibleWindowMinutes',
    'retention',
    'options',
    'verifyEvery',
    'restoreTestEvery',
    'restoreTestProbe',
  ];
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k));
  if (unknown.length)
    throw bad(`unknown field ${unknown.join(', ')}; a policy has ${allowed.join(', ')}`);
  if (creating && body.schedule === undefined) {
    throw bad('give the schedule: cron(0 3 * * ? *), rate(6 hours) or at(yyyy-mm-ddThh:mm:ss)');
  }
  if (creating && body.targets === undefined) throw bad('give at least one target or selector');
  return {
    targets: body.targets === undefined ? undefined : checkTargets(body.targets),
    schedule:
      body.schedule === undefined ? undefined : parseSchedule(String(body.schedule)).expression,
    timezone: body.timezone === undefined ? undefined : checkTimezone(String(body.timezone)),
    flexibleWindowMinutes: checkInteger(
      body.flexibleWindowMinutes,
      'flexibleWindowMinutes',
      0,
      1440,
    ),
    retention: body.retention === undefined ? undefined : checkRetention(body.retention),
    options: body.options === undefined ? undefined : checkOptions(body.options),
    verifyEvery: checkInteger(body.verifyEvery, 'verifyEvery', 0, 10_000),
    restoreTestEvery: checkInteger(body.restoreTestEvery, 'restoreTestEvery', 0, 10_000),
    restoreTestProbe: checkProbe(body.restoreTestProbe),
  };
}

/** A restore test's probe: a command line for `sh -c`; "" removes it (an update). */
function checkProbe(raw: unknown): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || raw.length > 4096) {
    throw bad('restoreTestProbe is a command line for sh -c, at most 4096 characters');
  }
  return raw;
}

function checkName(raw: unknown): string {
  if (typeof raw !== 'string' || !NAME.test(raw)) {
    throw bad(
      'a policy name is 1-63 lower-case letters, digits and -, starting with a letter or digit',
    );
  }
  return raw;
}

export async function createPolicy(
  deps: PolicyDeps,
  body: Record<string, unknown>,
): Promise<Policy> {
  const name = checkName(body.name);
  const f = checkFields(body, true);
  const now = deps.clock.now();
  const policy: Policy = {
    name,
    targets: f.targets!,
    schedule: f.schedule!,
    timezone: f.timezone ?? DEFAULT_TIMEZONE,
    flexibleWindowMinutes: f.flexibleWindowMinutes ?? 0,
    retention: f.retention ?? {},
    options: f.options ?? {},
    ...(f.verifyEvery ? { verifyEvery: f.verifyEvery } : {}),
    ...(f.restoreTestEvery ? { restoreTestEvery: f.restoreTestEvery } : {}),
    ...(f.restoreTestProbe ? { restoreTestProbe: f.restoreTestProbe } : {}),
    createdAt: now,
    updatedAt: now,
    runs: 0,
  };
  optionsFitTargets(policy.options, policy.targets);
  await deps.catalog.createPolicy(policy);
  try {
    await deps.schedules.put(policy);
  } catch (err) {
    // No policy without its schedule: the user sees the error and can try again.
    await deps.catalog.deletePolicy(name);
    throw err;
  }
  return policy;
}

export async function getPolicy(catalog: Catalog, name: string): Promise<Policy> {
  const policy = await catalog.getPolicy(name);
  if (!policy)
    throw new NotFoundError(`policy ${name} does not exist; \`stowage policy list\` lists them`);
  return policy;
}

export async function updatePolicy(
  deps: PolicyDeps,
  name: string,
  body: Record<string, unknown>,
): Promise<Policy> {
  if (body.name !== undefined && body.name !== name)
    throw bad('a policy cannot be renamed: create a new one');
  const current = await getPolicy(deps.catalog, name);
  const f = checkFields(body, false);
  const scheduleChanged =
    (f.schedule !== undefined && f.schedule !== current.schedule) ||
    (f.timezone !== undefined && f.timezone !== current.timezone);
  const next: Policy = {
    ...current,
    ...(f.targets ? { targets: f.targets } : {}),
    ...(f.schedule ? { schedule: f.schedule } : {}),
    ...(f.timezone ? { timezone: f.timezone } : {}),
    ...(f.flexibleWindowMinutes !== undefined
      ? { flexibleWindowMinutes: f.flexibleWindowMinutes }
      : {}),
    ...(f.retention ? { retention: { ...current.retention, ...f.retention } } : {}),
    ...(f.options ? { options: f.options } : {}),
    ...(f.verifyEvery !== undefined ? { verifyEvery: f.verifyEvery } : {}),
    ...(f.restoreTestEvery !== undefined ? { restoreTestEvery: f.restoreTestEvery } : {}),
    ...(f.restoreTestProbe !== undefined ? { restoreTestProbe: f.restoreTestProbe } : {}),
    // A rate() counts from its last change, as EventBridge's does from the schedule's update.
    ...(scheduleChanged ? { updatedAt: deps.clock.now() } : {}),
  };
  if (next.verifyEvery === 0) delete next.verifyEvery;
  if (next.restoreTestEvery === 0) delete next.restoreTestEvery;
  if (next.restoreTestProbe === '') delete next.restoreTestProbe;
  optionsFitTargets(next.options, next.targets);
  await deps.catalog.replacePolicy(next);
  await deps.schedules.put(next);
  return next;
}

export async function deletePolicy(deps: PolicyDeps, name: string): Promise<void> {
  await getPolicy(deps.catalog, name);
  await deps.schedules.delete(name);
  await deps.catalog.deletePolicy(name);
}

/** The slot the scheduler fires next, counting from the last run (or the last change). */
export function nextRunOf(policy: Policy): Date | undefined {
  const after = new Date(
    policy.lastRunAt && policy.lastRunAt > policy.updatedAt ? policy.lastRunAt : policy.updatedAt,
  );
  return nextFireTime(parseSchedule(policy.schedule), {
    after,
    timezone: policy.timezone,
    anchor: new Date(policy.updatedAt),
  });
}

export interface PolicyStatus extends Policy {
  nextRunAt?: string;
  lastStatus?: string;
  /** Why it needs attention; absent when all is well. */
  flag?: string;
}

/** The policy with its next run, its last run's status and, if any, why it is flagged. */
export async function policyStatus(
  deps: { catalog: Catalog; clock: { now(): string } },
  policy: Policy,
): Promise<PolicyStatus> {
  const now = Date.parse(deps.clock.now());
  const next = nextRunOf(policy);
  const last: Job | undefined = policy.lastJobId
    ? await deps.catalog.getJob(policy.lastJobId)
    : undefined;
  const flags: string[] = [];
  if (next && next.getTime() + policy.flexibleWindowMinutes * 60_000 + MISSED_GRACE_MS < now) {
    flags.push(`missed: the run due at ${next.toISOString()} did not start`);
  }
  if (last && FAILED.includes(last.status)) {
    flags.push(
      `last run ${last.jobId} ${last.status}${last.error ? `: ${last.error.message}` : ''}`,
    );
  }
  if (policy.flag) flags.push(policy.flag);
  return {
    ...policy,
    ...(next ? { nextRunAt: next.toISOString() } : {}),
    ...(last ? { lastStatus: last.status } : {}),
    ...(flags.length ? { flag: flags.join('; ') } : { flag: undefined }),
  };
}

/**
 * Puts a Policy Run Missed event for every policy whose expected run should have started within
 * its window (plus a minute) and became overdue during the last `everyMinutes`: the stack runs
 * this every POLICY_EVENTS.everyMinutes, so each missed run is announced once (twice at most if
 * EventBridge Scheduler delivers a check twice; consumers key on policy + dueAt), without
 * writing anything to the policy (a check must never undo an update made meanwhile). A policy
 * whose runs keep being missed is announced for the first missed run, and `stowage policy list`
 * flags it until a run starts.
 */
export async function announceMissedRuns(
  deps: PolicyDeps,
  everyMinutes: number = POLICY_EVENTS.everyMinutes,
): Promise<{ checked: number; announced: string[] }> {
  const now = deps.clock.now();
  const since = Date.parse(now) - everyMinutes * 60_000;
  const announced: string[] = [];
  const policies = await deps.catalog.listPolicies();
  for (const policy of policies) {
    const next = nextRunOf(policy);
    if (!next) continue;
    const overdueAt = next.getTime() + policy.flexibleWindowMinutes * 60_000 + MISSED_GRACE_MS;
    if (overdueAt >= Date.parse(now) || overdueAt < since) continue;
    const dueAt = next.toISOString();
    const event: PolicyEvent = {
      source: POLICY_EVENTS.source,
      detailType: POLICY_EVENTS.detailType,
      time: now,
      resources: [],
      detail: {
        policy: policy.name,
        dueAt,
        flexibleWindowMinutes: policy.flexibleWindowMinutes,
        schedule: policy.schedule,
        timezone: policy.timezone,
        message: `missed: the run of policy ${policy.name} due at ${dueAt} did not start`,
      },
    };
    await deps.jobObservers?.events.put(event);
    announced.push(policy.name);
  }
  return { checked: policies.length, announced };
}

export interface PolicyRun {
  policy: string;
  jobs: JobAccepted[];
  /** Targets or selectors whose backup could not start, with why. */
  refused: Array<{ target: string; error: { name: string; message: string } }>;
  /**
   * Whether this run's backups verify their points once they end (every verifyEvery-th run;
   * the backup workflow starts it, core/checks.ts).
   */
  verify: boolean;
  /**
   * Whether this run's Docker and LXD points are restore-tested once its backups end (every
   * restoreTestEvery-th run), and with which probe.
   */
  restoreTest: boolean;
  restoreTestProbe?: string;
}

/**
 * One run of a policy: a backup job per target or selector (one that cannot start does not stop
 * the others), recorded on the policy. `requestBackup` is the API's own.
 */
export async function runPolicy(
  deps: PolicyDeps,
  name: string,
  requestBackup: (
    deps: RequestDeps,
    body: unknown,
    extra?: { checks?: JobChecks },
  ) => Promise<JobAccepted>,
): Promise<PolicyRun> {
  const policy = await getPolicy(deps.catalog, name);
  const jobs: JobAccepted[] = [];
  const refused: PolicyRun['refused'] = [];
  const runs = policy.runs + 1;
  // Every Nth run's backups start their checks themselves once they end (core/checks.ts).
  const checks = checksOfRun({ ...policy, runs });
  for (const target of policy.targets) {
    const selector = target.slice(target.indexOf(':') + 1).includes('=');
    try {
      jobs.push(
        await requestBackup(
          deps,
          {
            ...(selector ? { selector: target } : { target }),
            ...policy.options,
            policy: policy.name,
          },
          checks ? { checks } : {},
        ),
      );
    } catch (err) {
      const e = err as Error;
      refused.push({ target, error: { name: e.name, message: e.message } });
    }
  }
  const now = deps.clock.now();
  await deps.catalog.updatePolicy(name, {
    runs,
    lastRunAt: now,
    ...(jobs[0] ? { lastJobId: jobs[0].jobId } : {}),
    flag:
      refused.length > 0
        ? `run at ${now}: ${refused.map((r) => `${r.target}: ${r.error.message}`).join('; ')}`
        : null,
  });
  return {
    policy: name,
    jobs,
    refused,
    verify: checks?.verify === true,
    restoreTest: checks?.restoreTest === true,
    ...(checks?.probe !== undefined ? { restoreTestProbe: checks.probe } : {}),
  };
}
