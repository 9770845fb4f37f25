/**
 * The HTTP API's routes (described by functions/api/openapi.json). Pure routing over the core
 * functions; the handler adapts API Gateway events to `ApiRequest` and back.
 */
import type { Catalog } from '../../kernel/catalog';
import {
  requestBackup,
  requestRestore,
  requestRollback,
  requestSnapshotCreate,
  requestSnapshotDelete,
  requestSnapshotExpiry,
  requestSnapshotRestore,
  requestSnapshotSchedule,
  requestVerify,
  type RequestDeps,
} from '../core/requests';
import { requestBackup as backupRequest } from '../core/requests';
import { listedSnapshots, type SnapshotListing } from '../../kernel/snapshots';
import { requestPrune, retentionOf } from '../core/prune';
import {
  createPolicy,
  deletePolicy,
  getPolicy,
  noSchedules,
  policyStatus,
  runPolicy,
  updatePolicy,
  type PolicyDeps,
} from '../core/policies';
import { isPlatform, PLATFORMS } from '../../kernel/targets';
import { NotFoundError, StowageError, TargetNotFound, ValidationError } from '../../kernel/errors';

export interface ApiRequest {
  method: string;
  path: string;
  query: Record<string, string | undefined>;
  body: string | null;
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

type Route = (deps: RequestDeps, req: ApiRequest, params: string[]) => Promise<ApiResponse>;

const ok = (body: unknown, status = 200): ApiResponse => ({ status, body });

function parseBody(req: ApiRequest): Record<string, unknown> {
  if (!req.body) return {};
  try {
    const value: unknown = JSON.parse(req.body);
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
  } catch {
    // fall through
  }
  throw new ValidationError('request body must be a JSON object');
}

function limitOf(req: ApiRequest): number {
  const raw = req.query.limit;
  if (raw === undefined) return 100;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1000) {
    throw new ValidationError('limit must be a whole number from 1 to 1000');
  }
  return n;
}

async function listTargets(catalog: Catalog, platform: string | undefined) {
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

const TIERS = ['offsite', 'snapshot'] as const;

/**
 * Both tiers in one list, newest first: offsite recovery points (`tier: offsite`, from the
 * catalog) and local snapshots (`tier: snapshot`, as the agents last reported them).
 */
async function listPoints(deps: RequestDeps, req: ApiRequest) {
  const { tier } = req.query;
  if (tier !== undefined && !(TIERS as readonly string[]).includes(tier)) {
    throw new ValidationError(`unknown tier "${tier}"; use one of: ${TIERS.join(', ')}`);
  }
  const limit = limitOf(req);
  // The canonical key as the catalog keeps it (a path may hold `@`; the CLI strips @AGENT).
  const target = req.query.target || undefined;
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

/** Each target that keeps local snapshots: its snapshots and the engine's schedule, if any. */
async function listSnapshotTargets(deps: RequestDeps, req: ApiRequest) {
  // The canonical key as the catalog keeps it (a path may hold `@`; the CLI strips @AGENT).
  const target = req.query.target || undefined;
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
      ? new ValidationError(`${target} has no local snapshots (LXD instances do)`)
      : new TargetNotFound(
          `${target} is not among the targets the agents see; \`stowage targets\` lists them`,
        );
  }
  return out;
}

const pruneDeps = (d: RequestDeps) => ({
  catalog: d.catalog,
  clock: d.clock,
  newId: d.newId,
  queueUrlFor: d.queueUrlFor,
  startPrune: (input: Parameters<RequestDeps['workflows']['startPrune']>[0]) =>
    d.workflows.startPrune(input),
});

const policyDeps = (d: RequestDeps): PolicyDeps => ({
  ...d,
  schedules: d.schedules ?? noSchedules,
});

/** Method, path template (as in openapi.json) and what answers it. */
export const ROUTES: ReadonlyArray<readonly [string, string, Route]> = [
  ['GET', '/targets', async (d, r) => ok(await listTargets(d.catalog, r.query.platform))],
  ['GET', '/agents', async (d) => ok(await d.catalog.listAgents())],
  ['POST', '/backups', async (d, r) => ok(await requestBackup(d, parseBody(r)), 202)],
  ['POST', '/restores', async (d, r) => ok(await requestRestore(d, parseBody(r)), 202)],
  ['POST', '/verifications', async (d, r) => ok(await requestVerify(d, parseBody(r)), 202)],
  ['POST', '/rollbacks', async (d, r) => ok(await requestRollback(d, parseBody(r)), 202)],
  ['GET', '/points', async (d, r) => ok(await listPoints(d, r))],
  ['POST', '/prunes', async (d, r) => ok(await requestPrune(pruneDeps(d), parseBody(r)), 202)],
  [
    'POST',
    '/points/deletions',
    async (d, r) => {
      const body = parseBody(r);
      if (typeof body.recoveryPointId !== 'string' || body.recoveryPointId === '') {
        throw new ValidationError('body must name the point: {"recoveryPointId": "rp-..."}');
      }
      return ok(await requestPrune(pruneDeps(d), { points: [body.recoveryPointId] }), 202);
    },
  ],
  [
    'GET',
    '/points/{id}',
    async (d, _r, [id]) => {
      const point = await d.catalog.getPoint(id!);
      if (!point) throw new NotFoundError(`recovery point ${id} does not exist`);
      return ok(point);
    },
  ],
  [
    'GET',
    '/policies',
    async (d) =>
      ok(await Promise.all((await d.catalog.listPolicies()).map((p) => policyStatus(d, p)))),
  ],
  ['POST', '/policies', async (d, r) => ok(await createPolicy(policyDeps(d), parseBody(r)), 201)],
  [
    'GET',
    '/policies/{name}',
    async (d, _r, [name]) => ok(await policyStatus(d, await getPolicy(d.catalog, name!))),
  ],
  [
    'PATCH',
    '/policies/{name}',
    async (d, r, [name]) => ok(await updatePolicy(policyDeps(d), name!, parseBody(r))),
  ],
  [
    'DELETE',
    '/policies/{name}',
    async (d, _r, [name]) => {
      await deletePolicy(policyDeps(d), name!);
      return ok({ name, deleted: true });
    },
  ],
  [
    'POST',
    '/policies/{name}/runs',
    async (d, _r, [name]) => ok(await runPolicy(policyDeps(d), name!, backupRequest), 202),
  ],
  ['GET', '/snapshots', async (d, r) => ok(await listSnapshotTargets(d, r))],
  ['POST', '/snapshots', async (d, r) => ok(await requestSnapshotCreate(d, parseBody(r)), 202)],
  [
    'POST',
    '/snapshots/deletions',
    async (d, r) => ok(await requestSnapshotDelete(d, parseBody(r)), 202),
  ],
  [
    'POST',
    '/snapshots/restores',
    async (d, r) => ok(await requestSnapshotRestore(d, parseBody(r)), 202),
  ],
  [
    'POST',
    '/snapshots/expiries',
    async (d, r) => ok(await requestSnapshotExpiry(d, parseBody(r)), 202),
  ],
  [
    'POST',
    '/snapshots/schedules',
    async (d, r) => ok(await requestSnapshotSchedule(d, parseBody(r)), 202),
  ],
  ['GET', '/jobs', async (d, r) => ok(await d.catalog.listJobs({ limit: limitOf(r) }))],
  [
    'GET',
    '/jobs/{id}',
    async (d, _r, [id]) => {
      const job = await d.catalog.getJob(id!);
      if (!job) throw new NotFoundError(`job ${id} does not exist; \`stowage jobs\` lists them`);
      return ok(job);
    },
  ],
];

const MATCHERS = ROUTES.map(
  ([method, template, fn]) =>
    [method, new RegExp(`^${template.replace(/\{[^}]+\}/g, '([^/]+)')}$`), fn] as const,
);

function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new ValidationError(`malformed percent-escape in the path: ${part}`);
  }
}

/** Routes one request; errors with a status become that status with `{ error, message }`. */
export async function route(deps: RequestDeps, req: ApiRequest): Promise<ApiResponse> {
  const path = req.path.replace(/\/+$/, '') || '/';
  try {
    let pathMatched = false;
    for (const [method, pattern, fn] of MATCHERS) {
      const m = pattern.exec(path);
      if (!m) continue;
      pathMatched = true;
      if (method !== req.method) continue;
      return await fn(deps, req, m.slice(1).map(decodePart));
    }
    return pathMatched
      ? {
          status: 405,
          body: { error: 'MethodNotAllowed', message: `${req.method} ${path} is not allowed` },
        }
      : { status: 404, body: { error: 'NotFound', message: `no such endpoint: ${path}` } };
  } catch (err) {
    if (err instanceof StowageError && err.status < 500) {
      return { status: err.status, body: { error: err.name, message: err.message } };
    }
    throw err;
  }
}
