import { beforeEach, describe, expect, it } from 'vitest';
import { route, type ApiRequest } from '../../../../functions/api/routes';
import type { RequestDeps } from '../../../../functions/core/requests/launch';
import { makeAgent, makePoint, makeTarget, T0 } from '../../../fixtures/factories';
import { makeRequestDeps } from '../../../fixtures/fake-workflows';
import type { MemoryCatalog } from '../../../fixtures/memory-catalog';

const get = (path: string, query: Record<string, string> = {}): ApiRequest => ({
  method: 'GET',
  path,
  query,
  body: null,
});

let catalog: MemoryCatalog;
let deps: RequestDeps;
const at = (minutes: number) => new Date(Date.parse(T0) + minutes * 60_000).toISOString();

beforeEach(async () => {
  ({ catalog, deps } = makeRequestDeps());
  await catalog.putPoint(
    makePoint({ recoveryPointId: 'rp-old', target: 'lxd:web', createdAt: at(-30) }),
  );
  await catalog.putPoint(
    makePoint({ recoveryPointId: 'rp-new', target: 'lxd:web', createdAt: at(-10) }),
  );
  await catalog.putPoint(
    makePoint({ recoveryPointId: 'rp-db', target: 'docker:db', createdAt: at(-5) }),
  );
  await catalog.putAgent(
    makeAgent({
      agent: 'site-1',
      targets: [
        makeTarget('lxd:web', {
          snapshots: [
            { name: 's0', createdAt: at(-20), expiresAt: null, stateful: false },
            { name: 'expired', createdAt: at(-15), expiresAt: at(-1), stateful: false },
          ],
          snapshotSchedule: { every: '@daily', expiry: '7d' },
        }),
        makeTarget('docker:db'),
      ],
    }),
  );
});

describe('GET /points with both tiers', () => {
  it('merges offsite points and unexpired local snapshots of a target, newest first', async () => {
    const res = await route(deps, get('/points', { target: 'lxd:web' }));
    expect(res.status).toBe(200);
    const rows = res.body as Array<{ tier: string; recoveryPointId?: string; snapshotId?: string }>;
    expect(rows.map((r) => [r.tier, r.recoveryPointId ?? r.snapshotId])).toEqual([
      ['offsite', 'rp-new'],
      ['snapshot', 'lxd:web/s0'],
      ['offsite', 'rp-old'],
    ]);
  });

  it('filters by tier and refuses an unknown tier', async () => {
    const snapshots = await route(deps, get('/points', { tier: 'snapshot' }));
    expect((snapshots.body as Array<{ snapshotId: string }>).map((r) => r.snapshotId)).toEqual([
      'lxd:web/s0',
    ]);
    const offsite = await route(deps, get('/points', { tier: 'offsite' }));
    expect((offsite.body as Array<{ tier: string }>).every((r) => r.tier === 'offsite')).toBe(true);
    expect((offsite.body as unknown[]).length).toBe(3);
    const bad = await route(deps, get('/points', { tier: 'cold' }));
    expect(bad).toMatchObject({ status: 400, body: { error: 'ValidationError' } });
  });

  it('lists the snapshot targets with their schedule; a target without snapshots is refused', async () => {
    const res = await route(deps, get('/snapshots'));
    expect(res.body).toMatchObject([
      {
        target: 'lxd:web',
        agent: 'site-1',
        schedule: { every: '@daily', expiry: '7d' },
        snapshots: [{ snapshotId: 'lxd:web/s0' }],
      },
    ]);
    expect(await route(deps, get('/snapshots', { target: 'docker:db' }))).toMatchObject({
      status: 400,
    });
    expect(await route(deps, get('/snapshots', { target: 'lxd:ghost' }))).toMatchObject({
      status: 404,
      body: { error: 'TargetNotFound' },
    });
  });
});
