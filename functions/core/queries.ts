/**
 * What the HTTP API's GET routes answer: targets as the agents last reported them, recovery
 * points of both tiers, the targets that keep local snapshots, one point, one job. Read-only.
 */
import type { Catalog } from '../../kernel/catalog';
import { NotFoundError, TargetNotFound, ValidationError } from '../../kernel/errors';
import type { Job, RecoveryPoint } from '../../kernel/model';
import { listedSnapshots, type SnapshotListing } from '../../kernel/snapshots';
import { isPlatform, PLATFORMS } from '../../kernel/targets';
import type { Clock } from './jobs';
import { retentionOf } from './prune';
import { snapshotKeepers } from './requests/snapshot';

/** Every target the agents see (of one platform), with the agent and when it reported. */
export async function listTargets(catalog: Catalog, platform: string | undefined) {
  if (platform !== undefined && !isPlatform(platform)) {
    throw new ValidationError(
      `unknown platform "${platform}"; use one of: ${PLATFORMS.join(', ')}`,
    );
  }
  const agents = await catalog.listAgents();
  return agents.flatMap((a) =>
    a.targets
      .filter((t) => platform === undefined || t.platform === platform)
      .map((t) => ({ ...t, agent: a.agent, seenAt: a.seenAt })),
  );
}

export const TIERS = ['offsite', 'snapshot'] as const;

export interface PointQuery {
  tier?: string;
  /** The canonical key as the catalog keeps it (a path may hold `@`; the CLI strips @AGENT). */
  target?: string;
  limit: number;
}

/**
 * Both tiers in one list, newest first: offsite recovery points (`tier: offsite`, from the
 * catalog, each with what retention decides of it) and local snapshots (`tier: snapshot`, as the agents last reported them).
 */
export async function listPoints(deps: { catalog: Catalog; clock: Clock }, query: PointQuery) {
  const { tier, target, limit } = query;
  if (tier !== undefined && !(TIERS as readonly string[]).includes(tier)) {
    throw new ValidationError(`unknown tier "${tier}"; use one of: ${TIERS.join(', ')}`);
  }
  const retention = tier === 'snapshot' ? new Map() : await retentionOf(deps);
  const offsite =
    tier === 'snapshot'
      ? []
      : (await deps.catalog.listPoints({ limit, ...(target ? { target } : {}) })).map((p) => {
          const decision = retention.get(p.recoveryPointId);
          return {
            tier: 'offsite' as const,
            ...p,
            ...(decision
              ? {
                  retention: {
                    keep: decision.keep,
                    reasons: decision.reasons,
                    ...(decision.keptUntil ? { keptUntil: decision.keptUntil } : {}),
                  },
                }
              : {}),
          };
        });
  const snapshots: SnapshotListing[] =
    tier === 'offsite'
      ? []
      : listedSnapshots(await deps.catalog.listAgents(), new Date(deps.clock.now()), target);
  return [...offsite, ...snapshots]
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
    .slice(0, limit);
}

/** Each target that keeps local snapshots (or the one given): its snapshots and its schedule. */
export async function listSnapshotTargets(
  deps: { catalog: Catalog; clock: Clock },
  target: string | undefined,
) {
  const agents = await deps.catalog.listAgents();
  const now = new Date(deps.clock.now());
  const out = agents.flatMap((a) =>
    a.targets
      .filter((t) => t.snapshots && (target === undefined || t.target === target))
      .map((t) => ({
        target: t.target,
        agent: a.agent,
        state: t.state,
        seenAt: a.seenAt,
        schedule: t.snapshotSchedule ?? null,
        snapshots: listedSnapshots([{ ...a, targets: [t] }], now),
      })),
  );
  if (target !== undefined && out.length === 0) {
    const seen = agents.some((a) => a.targets.some((t) => t.target === target));
    throw seen
      ? new ValidationError(`${target} has no local snapshots (${snapshotKeepers()} do)`)
      : new TargetNotFound(
          `${target} is not among the targets the agents see; \`stowage targets\` lists them`,
        );
  }
  return out;
}

export async function getPoint(catalog: Catalog, id: string): Promise<RecoveryPoint> {
  const point = await catalog.getPoint(id);
  if (!point) throw new NotFoundError(`recovery point ${id} does not exist`);
  return point;
}

export async function getJob(catalog: Catalog, id: string): Promise<Job> {
  const job = await catalog.getJob(id);
  if (!job) throw new NotFoundError(`job ${id} does not exist; \`stowage jobs\` lists them`);
  return job;
}
