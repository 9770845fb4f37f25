/**
 * Prune: retention, then garbage collection. The API starts the prune workflow
 * (statemachines/prune.asl.json); its prune-plan Lambda decides which points go (retention, or
 * the points `stowage points delete` names) and deletes their catalog items, so they vanish from
 * listings and no restore can start from them; an agent then deletes their manifests and
 * collects the packs nothing references any more (agents/repo/gc.ts), and record-job writes
 * what was done on the job.
 *
 * A point a running restore or verify reads is never deleted: it waits for the next prune.
 */
import type { Catalog } from '../../kernel/catalog';
import type { Job, Policy } from '../../kernel/model';
import {
  AgentUnavailable,
  ConflictError,
  PointNotFound,
  ValidationError,
} from '../../kernel/errors';
import type {
  PruneExecutionInput,
  PruneMarkResult,
  PrunePlan,
  PruneSummary,
  PruneSweepResult,
} from '../../statemachines/contracts';
import type { Clock } from './jobs';
import { applyRetention, type RetentionDecision, type RetentionPolicy } from './retention';

/** Points read per prune: the catalog lists at most this many (ask again for more). */
const MAX_POINTS = 100_000;
const LISTED = 200;
const ACTIVE = ['PENDING', 'RUNNING'];
/**
 * A pack whose chunks the kept points use fill less than this share of it is repacked (the
 * agent's DEFAULT_REPACK_BELOW, agents/repo/gc.ts; functions/ may not import agents/).
 */
export const DEFAULT_REPACK_BELOW_PERCENT = 50;

export function retentionPolicies(policies: readonly Policy[]): RetentionPolicy[] {
  return policies.map((p) => ({
    name: p.name,
    // Names are covered directly; selectors through the points their runs made.
    targets: p.targets.filter((t) => !t.includes('=')),
    timezone: p.timezone,
    rules: p.retention,
  }));
}

/** Every offsite point's retention decision, by point id (for `stowage points`). */
export async function retentionOf(deps: {
  catalog: Catalog;
  clock: Clock;
}): Promise<Map<string, RetentionDecision>> {
  const [points, policies] = await Promise.all([
    deps.catalog.listPoints({ limit: MAX_POINTS }),
    deps.catalog.listPolicies(),
  ]);
  const decisions = applyRetention(
    points.map((p) => ({ ...p, streams: p.streams })),
    retentionPolicies(policies),
    new Date(deps.clock.now()),
  );
  return new Map(decisions.map((d) => [d.recoveryPointId, d]));
}

/** Jobs a prune plan looks at (newest first): busy points and uncommitted manifests. */
const JOBS_READ = 10_000;
/**
 * How far before the previous prune a backup's end is looked at again: a manifest whose job
 * ended before the previous prune began was that prune's to delete (its lease had ended, or it
 * was kept busy and is seen again within this).
 */
const UNCOMMITTED_OVERLAP_MS = 24 * 60 * 60_000;
/** Uncommitted points handed to one mark at most (the rest go to the next prune). */
const MAX_UNCOMMITTED = 5000;

/**
 * Points of backups that ended without them: an item of an ended backup job that is not
 * COMPLETED and has no catalog point. Its manifest, if the agent wrote one, is referenced by
 * nothing in the catalog, yet the mark would read it and keep its chunks forever: the agent
 * succeeded, then a cancel landed before commit-point (which then writes nothing), or
 * commit-point refused the point. Nothing makes such a point COMPLETED later (commit-point
 * completes items only while their job runs), so its manifest is garbage; the mark deletes it
 * like an expired point's, never while a lease of the task that writes it is live.
 */
function uncommittedPoints(
  jobs: readonly Job[],
): Array<{ recoveryPointId: string; jobId: string }> {
  const lastPrune = jobs.find(
    (j) => j.kind === 'PRUNE' && j.status === 'SUCCEEDED' && j.prune && !j.prune.dryRun,
  );
  const since = lastPrune ? Date.parse(lastPrune.createdAt) - UNCOMMITTED_OVERLAP_MS : -Infinity;
  const out: Array<{ recoveryPointId: string; jobId: string }> = [];
  for (const job of jobs) {
    if (job.kind !== 'BACKUP' || ACTIVE.includes(job.status)) continue;
    if (Date.parse(job.endedAt ?? job.createdAt) < since) continue;
    for (const item of job.items ?? []) {
      if (item.status !== 'COMPLETED' && item.recoveryPointId) {
        out.push({ recoveryPointId: item.recoveryPointId, jobId: job.jobId });
      }
    }
  }
  return out;
}

/** Points that a restore or verify not yet ended reads, with its job. */
function pointsInUse(jobs: readonly Job[]): Map<string, string> {
  const reading = new Map<string, string>();
  for (const job of jobs) {
    if (!ACTIVE.includes(job.status)) continue;
    if ((job.kind === 'RESTORE' || job.kind === 'VERIFY') && job.recoveryPointId) {
      reading.set(job.recoveryPointId, job.jobId);
    }
  }
  return reading;
}

/**
 * The prune-plan Lambda: which points go, each with why; deletes their catalog items unless
 * this is a dry run. Idempotent: a retry finds the deleted items gone and plans the rest again.
 */
export async function planPrune(
  deps: { catalog: Catalog; clock: Clock },
  input: Pick<PruneExecutionInput, 'jobId' | 'dryRun' | 'points'>,
): Promise<PrunePlan> {
  let expired: PrunePlan['expired'];
  let kept = 0;
  if (input.points) {
    expired = [];
    for (const id of input.points) {
      const point = await deps.catalog.getPoint(id);
      // Already gone from the catalog (a retried plan): its manifest still goes.
      expired.push({
        recoveryPointId: id,
        target: point?.target ?? '?',
        reasons: ['deleted by `stowage points delete`'],
      });
    }
  } else {
    const decisions = [...(await retentionOf(deps)).values()];
    expired = decisions
      .filter((d) => !d.keep)
      .map((d) => ({ recoveryPointId: d.recoveryPointId, target: d.target, reasons: d.reasons }));
    kept = decisions.length - expired.length;
  }
  const jobs = await deps.catalog.listJobs({ limit: JOBS_READ });
  const reading = pointsInUse(jobs);
  const busy = expired
    .filter((e) => reading.has(e.recoveryPointId))
    .map((e) => ({ recoveryPointId: e.recoveryPointId, jobId: reading.get(e.recoveryPointId)! }));
  const going = expired.filter((e) => !reading.has(e.recoveryPointId));
  if (!input.dryRun) {
    for (const e of going) await deps.catalog.deletePoint(e.recoveryPointId);
  }
  // A retention prune also collects the manifests of points that were never committed.
  const uncommitted: string[] = [];
  if (!input.points) {
    const goingIds = new Set(going.map((e) => e.recoveryPointId));
    for (const u of uncommittedPoints(jobs)) {
      if (uncommitted.length >= MAX_UNCOMMITTED) break;
      if (goingIds.has(u.recoveryPointId) || uncommitted.includes(u.recoveryPointId)) continue;
      if (await deps.catalog.getPoint(u.recoveryPointId)) continue;
      uncommitted.push(u.recoveryPointId);
    }
  }
  return {
    deletePoints: [...going.map((e) => e.recoveryPointId), ...uncommitted],
    expired: going,
    busy,
    kept: kept + busy.length,
    uncommitted,
  };
}

/** The job's `prune` record from the workflow's results. */
export function pruneSummary(
  dryRun: boolean,
  plan: PrunePlan,
  mark: PruneMarkResult,
  sweep: PruneSweepResult | undefined,
  waitedFor: readonly string[],
): PruneSummary {
  // A point a job began to read between the plan and the mark keeps its manifest.
  const busy = new Set(mark.pointsKept.map((k) => k.recoveryPointId));
  const points = plan.expired.filter((e) => !busy.has(e.recoveryPointId));
  const uncommitted = new Set(plan.uncommitted ?? []);
  return {
    dryRun,
    points: points.slice(0, LISTED),
    pointsDeleted: points.length,
    uncommittedDeleted: mark.pointsDeleted.filter((id) => uncommitted.has(id)).length,
    pointsKept: plan.kept,
    busy: [...plan.busy, ...mark.pointsKept],
    packsFound: mark.packs,
    bytesFound: dryRun
      ? mark.bytes + Math.max(0, (mark.repackedBytes ?? 0) - (mark.repackWritten ?? 0))
      : mark.bytes,
    packsRepacked: dryRun ? (mark.repacked ?? 0) : sweep?.done ? (sweep.packsRepacked ?? 0) : 0,
    bytesRewritten: mark.repackWritten ?? 0,
    packsDeleted: sweep?.done ? sweep.packsDeleted : 0,
    chunksDeleted: sweep?.done ? sweep.chunksDeleted : 0,
    bytesFreed: sweep?.done ? Math.max(0, sweep.bytesFreed - (mark.repackWritten ?? 0)) : 0,
    waitedFor: [...waitedFor],
  };
}

export async function markPruned(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  summary: PruneSummary,
): Promise<Job> {
  const job = await deps.catalog.getJob(jobId);
  const waited = new Set([...(job?.prune?.waitedFor ?? []), ...summary.waitedFor]);
  const updated = await deps.catalog.updateJob(
    jobId,
    {
      status: 'SUCCEEDED',
      endedAt: deps.clock.now(),
      prune: { ...summary, waitedFor: [...waited] },
      progress: {
        phase: 'done',
        bytesDone: summary.bytesFreed,
        rate: 0,
        updatedAt: deps.clock.now(),
      },
    },
    ['PENDING', 'RUNNING'],
  );
  return updated ?? (await deps.catalog.getJob(jobId))!;
}

/** The sweep waits for leases: say so on the job, and remember whom it waited for. */
export async function markPruneWaiting(
  deps: { catalog: Catalog; clock: Clock },
  jobId: string,
  waitingFor: readonly string[],
): Promise<void> {
  const job = await deps.catalog.getJob(jobId);
  const waited = new Set([...(job?.prune?.waitedFor ?? []), ...waitingFor]);
  await deps.catalog.updateJob(
    jobId,
    {
      prune: { ...emptySummary(), ...job?.prune, waitedFor: [...waited] },
      progress: {
        phase: `sweep waits for ${waitingFor.join(', ')}: they started before the mark and may rely on unreferenced packs`,
        bytesDone: 0,
        rate: 0,
        updatedAt: deps.clock.now(),
      },
    },
    ['RUNNING'],
  );
}

function emptySummary(): PruneSummary {
  return {
    dryRun: false,
    points: [],
    pointsDeleted: 0,
    pointsKept: 0,
    busy: [],
    packsFound: 0,
    bytesFound: 0,
    packsRepacked: 0,
    bytesRewritten: 0,
    packsDeleted: 0,
    chunksDeleted: 0,
    bytesFreed: 0,
    waitedFor: [],
  };
}

export interface PruneRequestDeps {
  catalog: Catalog;
  clock: Clock;
  newId(prefix: 'job' | 'rp'): string;
  queueUrlFor(agent: string): string;
  startPrune(input: PruneExecutionInput): Promise<string>;
  /**
   * The agent prunes must run on (AWS: the maintenance site, whose role alone may delete from
   * the store); without it, the agent that reported last.
   */
  pruneAgent?: string;
}

/** The agent that collects garbage: the one that reported last (each holds the data key). */
async function pruningAgent(catalog: Catalog, required?: string): Promise<string> {
  if (required) {
    if (!(await catalog.getAgent(required))) {
      throw new AgentUnavailable(
        `prunes run on agent ${required}, the only one whose credentials may delete from the store, and it has not reported: start \`stowage agent --site ${required}\` with the maintenance role's credentials`,
      );
    }
    return required;
  }
  const agents = await catalog.listAgents();
  const newest = [...agents].sort((a, b) => b.seenAt.localeCompare(a.seenAt))[0];
  if (!newest) {
    throw new AgentUnavailable(
      'no agent has reported: garbage collection runs on an agent (it holds the key the repository is sealed with); start one',
    );
  }
  return newest.agent;
}

/** Starts a prune (retention then GC), or a deletion of named points; one prune at a time. */
export async function requestPrune(
  deps: PruneRequestDeps,
  body: { dryRun?: unknown; points?: unknown; repackBelow?: unknown },
): Promise<{
  jobId: string;
  kind: 'PRUNE';
  status: Job['status'];
  target: string;
  agent: string;
  executionArn: string;
}> {
  const unknown = Object.keys(body).filter((k) => !['dryRun', 'points', 'repackBelow'].includes(k));
  if (unknown.length) {
    throw new ValidationError(
      `unknown field ${unknown.join(', ')}; a prune takes dryRun, points and repackBelow`,
    );
  }
  if (body.dryRun !== undefined && typeof body.dryRun !== 'boolean') {
    throw new ValidationError('dryRun must be true or false');
  }
  const repackBelow = body.repackBelow ?? DEFAULT_REPACK_BELOW_PERCENT;
  if (
    !Number.isSafeInteger(repackBelow) ||
    (repackBelow as number) < 0 ||
    (repackBelow as number) > 100
  ) {
    throw new ValidationError(
      'repackBelow is a whole percentage from 0 (never repack) to 100: packs whose chunks kept points use fill less than it are repacked',
    );
  }
  let points: string[] | undefined;
  if (body.points !== undefined) {
    if (
      !Array.isArray(body.points) ||
      body.points.length === 0 ||
      body.points.length > 1000 ||
      !body.points.every((p) => typeof p === 'string' && /^[A-Za-z0-9_-]{1,100}$/.test(p))
    ) {
      throw new ValidationError(
        'points must be a list of 1 to 1000 recovery point ids, e.g. ["rp-..."]',
      );
    }
    points = [...new Set(body.points as string[])];
    for (const id of points) {
      if (!(await deps.catalog.getPoint(id))) {
        throw new PointNotFound(
          `recovery point ${id} does not exist; \`stowage points\` lists them`,
        );
      }
    }
  }
  const running = (await deps.catalog.listJobs({ limit: 1000 })).find(
    (j) => j.kind === 'PRUNE' && ACTIVE.includes(j.status),
  );
  if (running) {
    throw new ConflictError(
      `prune ${running.jobId} is still running; one prune runs at a time (\`stowage job ${running.jobId}\`)`,
    );
  }
  const agent = await pruningAgent(deps.catalog, deps.pruneAgent);
  const dryRun = body.dryRun === true;
  const job: Job = {
    jobId: deps.newId('job'),
    kind: 'PRUNE',
    target: points ? points.join(',') : dryRun ? 'repository (dry run)' : 'repository',
    agent,
    status: 'PENDING',
    createdAt: deps.clock.now(),
  };
  await deps.catalog.createJob(job);
  let executionArn: string;
  try {
    executionArn = await deps.startPrune({
      jobId: job.jobId,
      agent,
      queueUrl: deps.queueUrlFor(agent),
      dryRun,
      repackBelow: repackBelow as number,
      ...(points ? { points } : {}),
    });
  } catch (err) {
    await deps.catalog.updateJob(
      job.jobId,
      {
        status: 'FAILED',
        endedAt: deps.clock.now(),
        error: { name: (err as Error).name, message: (err as Error).message },
      },
      ['PENDING'],
    );
    throw err;
  }
  return {
    jobId: job.jobId,
    kind: 'PRUNE',
    status: job.status,
    target: job.target,
    agent,
    executionArn,
  };
}

/**
 * The daily prune the scheduler runs (AWS: an EventBridge Scheduler schedule invoking run-policy
 * with `{"prune": true}`; local mode: local/scheduler.ts): a prune with the default repack
 * threshold. A prune still running (started by hand, or yesterday's waiting for a lease) is not
 * an error: this one is skipped, and the answer says why. No agent to run it is an error (in
 * AWS the run-policy alarm fires), since nothing is ever deleted then.
 */
export async function runScheduledPrune(
  deps: PruneRequestDeps,
): Promise<{ jobId: string } | { skipped: string }> {
  try {
    return { jobId: (await requestPrune(deps, {})).jobId };
  } catch (err) {
    if (err instanceof ConflictError) return { skipped: err.message };
    throw err;
  }
}
