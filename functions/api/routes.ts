/**
 * The HTTP API's routes (described by functions/api/openapi.json). Pure routing over the core
 * functions; the handler adapts API Gateway events to `ApiRequest` and back.
 */
import { getJobHistory } from '../core/history';
import { getJobLog } from '../core/job-log';
import { getJob, getPoint, listPoints, listSnapshotTargets, listTargets } from '../core/queries';
import { cancelJob, cancellationStatus } from '../core/cancel';
import { requestBackup } from '../core/requests/backup';
import type { RequestDeps } from '../core/requests/launch';
import { planRestore, requestRestore } from '../core/requests/restore';
import { requestRestoreTest } from '../core/requests/restore-test';
import {
  requestSnapshotCreate,
  requestSnapshotDelete,
  requestSnapshotExpiry,
  planSnapshotRestore,
  requestSnapshotRestore,
  requestSnapshotSchedule,
} from '../core/requests/snapshot';
import { requestRollback, requestVerify } from '../core/requests/verify';
import { StowageError, ValidationError } from '../../kernel/errors';
import { requestPrune } from '../core/prune';
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

const pruneDeps = (d: RequestDeps) => ({
  catalog: d.catalog,
  clock: d.clock,
  newId: d.newId,
  queueUrlFor: d.queueUrlFor,
  startPrune: (input: Parameters<RequestDeps['workflows']['startPrune']>[0]) =>
    d.workflows.startPrune(input),
  ...(d.pruneAgent ? { pruneAgent: d.pruneAgent } : {}),
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
  [
    'POST',
    '/restores',
    async (d, r) => {
      const body = parseBody(r);
      // A plan starts nothing: 200 with what the restore would do.
      return body.plan === true
        ? ok(await planRestore(d, body))
        : ok(await requestRestore(d, body), 202);
    },
  ],
  ['POST', '/verifications', async (d, r) => ok(await requestVerify(d, parseBody(r)), 202)],
  ['POST', '/restore-tests', async (d, r) => ok(await requestRestoreTest(d, parseBody(r)), 202)],
  ['POST', '/rollbacks', async (d, r) => ok(await requestRollback(d, parseBody(r)), 202)],
  ['POST', '/prunes', async (d, r) => ok(await requestPrune(pruneDeps(d), parseBody(r)), 202)],
  [
    'POST',
    '/points/deletions',
    async (d, r) => {
      const body = parseBody(r);
      if (
        typeof body.recoveryPointId !== 'string' ||
        body.recoveryPointId === '' ||
        Object.keys(body).length !== 1
      ) {
        throw new ValidationError('body must name the point, alone: {"recoveryPointId": "rp-..."}');
      }
      return ok(await requestPrune(pruneDeps(d), { points: [body.recoveryPointId] }), 202);
    },
  ],
  [
    'GET',
    '/points',
    async (d, r) =>
      ok(
        await listPoints(d, {
          limit: limitOf(r),
          ...(r.query.tier !== undefined ? { tier: r.query.tier } : {}),
          ...(r.query.target ? { target: r.query.target } : {}),
        }),
      ),
  ],
  ['GET', '/points/{id}', async (d, _r, [id]) => ok(await getPoint(d.catalog, id!))],
  [
    'GET',
    '/snapshots',
    async (d, r) => ok(await listSnapshotTargets(d, r.query.target || undefined)),
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
    async (d, _r, [name]) => ok(await runPolicy(policyDeps(d), name!, requestBackup), 202),
  ],
  ['POST', '/snapshots', async (d, r) => ok(await requestSnapshotCreate(d, parseBody(r)), 202)],
  [
    'POST',
    '/snapshots/deletions',
    async (d, r) => ok(await requestSnapshotDelete(d, parseBody(r)), 202),
  ],
  [
    'POST',
    '/snapshots/restores',
    async (d, r) => {
      const body = parseBody(r);
      // A plan starts nothing: 200 with what the revert would do.
      return body.plan === true
        ? ok(await planSnapshotRestore(d, body))
        : ok(await requestSnapshotRestore(d, body), 202);
    },
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
  ['GET', '/jobs/{id}', async (d, _r, [id]) => ok(await getJob(d.catalog, id!))],
  ['GET', '/jobs/{id}/history', async (d, _r, [id]) => ok(await getJobHistory(d, id!))],
  ['GET', '/jobs/{id}/log', async (d, _r, [id]) => ok(await getJobLog(d.catalog, id!))],
  ['POST', '/jobs/{id}/cancellation', async (d, _r, [id]) => ok(await cancelJob(d, id!), 202)],
  ['GET', '/jobs/{id}/cancellation', async (d, _r, [id]) => ok(await cancellationStatus(d, id!))],
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
