import { beforeEach, describe, expect, it } from 'vitest';
import { route, type ApiRequest } from '../../../../functions/api/routes';
import type { RequestDeps } from '../../../../functions/core/requests/launch';
import { AgentUnavailable } from '../../../../kernel/errors';
import { makeAgent, makeJob, makePoint, makeTarget, T0 } from '../../../fixtures/factories';
import {
  executionArn,
  makeRequestDeps,
  type FakeWorkflows,
} from '../../../fixtures/fake-workflows';
import type { MemoryCatalog } from '../../../fixtures/memory-catalog';

function makeRequest(overrides: Partial<ApiRequest> = {}): ApiRequest {
  return { method: 'GET', path: '/', query: {}, body: null, ...overrides };
}

let catalog: MemoryCatalog;
let workflows: FakeWorkflows;
let deps: RequestDeps;

beforeEach(() => {
  ({ catalog, workflows, deps } = makeRequestDeps());
});

describe('route', () => {
  describe('paths and methods', () => {
    it.each(['/', '/nope', '/jobs/a/b', '/backups/x', '/targetsx'])(
      'answers 404 naming the path for an unknown endpoint: %s',
      async (path) => {
        const res = await route(deps, makeRequest({ path }));

        expect(res).toEqual({
          status: 404,
          body: { error: 'NotFound', message: `no such endpoint: ${path}` },
        });
      },
    );

    it.each([
      ['DELETE', '/jobs'],
      ['GET', '/backups'],
      ['PUT', '/restores'],
      ['POST', '/targets'],
      ['DELETE', '/points/rp-1'],
      ['POST', '/jobs/job-1'],
    ])('answers 405 for %s %s', async (method, path) => {
      const res = await route(deps, makeRequest({ method, path }));

      expect(res).toEqual({
        status: 405,
        body: { error: 'MethodNotAllowed', message: `${method} ${path} is not allowed` },
      });
    });

    it('ignores a trailing slash', async () => {
      const res = await route(deps, makeRequest({ path: '/agents/' }));

      expect(res.status).toBe(200);
    });

    it('answers a client error, not a crash, for a malformed escape in the path', async () => {
      const res = route(deps, makeRequest({ path: '/jobs/%E0%A4%A' }));

      await expect(res).resolves.toMatchObject({ status: expect.any(Number) });
      const { status } = await res;
      expect(status).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(500);
    });
  });

  describe('bodies', () => {
    it.each(['{not json', '[1,2]', '"docker:web"', 'null', '42'])(
      'answers 400 with {error, message} for a body that is not a JSON object: %s',
      async (body) => {
        await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));

        const res = await route(deps, makeRequest({ method: 'POST', path: '/backups', body }));

        expect(res).toEqual({
          status: 400,
          body: { error: 'ValidationError', message: 'request body must be a JSON object' },
        });
        expect(await catalog.listJobs()).toEqual([]);
        expect(workflows.backups).toEqual([]);
      },
    );

    it('treats a missing body as an empty object, which the request then refuses', async () => {
      const res = await route(deps, makeRequest({ method: 'POST', path: '/backups', body: null }));

      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ error: 'ValidationError' });
    });
  });

  describe('GET /targets', () => {
    beforeEach(async () => {
      await catalog.putAgent(
        makeAgent({ agent: 'site-1', seenAt: T0, targets: ['docker:web', 'lxd:c1'] }),
      );
      await catalog.putAgent(makeAgent({ agent: 'site-2', seenAt: T0, targets: ['docker:db'] }));
    });

    it('lists every target of every agent, with the agent and when it last reported', async () => {
      const res = await route(deps, makeRequest({ path: '/targets' }));

      expect(res).toEqual({
        status: 200,
        body: [
          { ...makeTarget('docker:web'), agent: 'site-1', seenAt: T0 },
          { ...makeTarget('lxd:c1'), agent: 'site-1', seenAt: T0 },
          { ...makeTarget('docker:db'), agent: 'site-2', seenAt: T0 },
        ],
      });
    });

    it('filters by ?platform=', async () => {
      const res = await route(
        deps,
        makeRequest({ path: '/targets', query: { platform: 'docker' } }),
      );

      expect((res.body as Array<{ target: string }>).map((t) => t.target)).toEqual([
        'docker:web',
        'docker:db',
      ]);
    });

    it('answers an empty list for a known platform no agent serves', async () => {
      const res = await route(
        deps,
        makeRequest({ path: '/targets', query: { platform: 'vsphere' } }),
      );

      expect(res).toEqual({ status: 200, body: [] });
    });

    it('answers 400 naming an unknown platform', async () => {
      const res = await route(
        deps,
        makeRequest({ path: '/targets', query: { platform: 'podman' } }),
      );

      expect(res.status).toBe(400);
      expect(res.body).toEqual({
        error: 'ValidationError',
        message: expect.stringContaining('unknown platform "podman"'),
      });
    });
  });

  describe('jobs and points', () => {
    it('answers a job by id', async () => {
      const job = makeJob({ jobId: 'job-7' });
      await catalog.createJob(job);

      const res = await route(deps, makeRequest({ path: '/jobs/job-7' }));

      expect(res).toEqual({ status: 200, body: job });
    });

    it('answers 404 naming the job for an unknown id', async () => {
      const res = await route(deps, makeRequest({ path: '/jobs/job-missing' }));

      expect(res.status).toBe(404);
      expect(res.body).toEqual({
        error: 'NotFoundError',
        message: expect.stringContaining('job job-missing does not exist'),
      });
    });

    it('decodes the id in the path', async () => {
      await catalog.createJob(makeJob({ jobId: 'job 1' }));

      const res = await route(deps, makeRequest({ path: '/jobs/job%201' }));

      expect(res.status).toBe(200);
    });

    it('lists jobs newest first up to ?limit=', async () => {
      for (const minute of [1, 3, 2]) {
        const createdAt = new Date(Date.parse(T0) + minute * 60_000).toISOString();
        await catalog.createJob(makeJob({ jobId: `job-${minute}`, createdAt }));
      }

      const res = await route(deps, makeRequest({ path: '/jobs', query: { limit: '2' } }));

      expect((res.body as Array<{ jobId: string }>).map((j) => j.jobId)).toEqual([
        'job-3',
        'job-2',
      ]);
    });

    it.each(['0', '1001', '2.5', 'ten', '-1', ''])(
      'answers 400 for a limit that is not a whole number from 1 to 1000: "%s"',
      async (limit) => {
        const res = await route(deps, makeRequest({ path: '/points', query: { limit } }));

        expect(res).toEqual({
          status: 400,
          body: {
            error: 'ValidationError',
            message: 'limit must be a whole number from 1 to 1000',
          },
        });
      },
    );

    it('lists the points of one target with ?target=', async () => {
      await catalog.putPoint(makePoint({ recoveryPointId: 'rp-a', target: 'docker:web' }));
      await catalog.putPoint(makePoint({ recoveryPointId: 'rp-b', target: 'docker:db' }));

      const res = await route(
        deps,
        makeRequest({ path: '/points', query: { target: 'docker:db' } }),
      );

      expect(
        (res.body as Array<{ recoveryPointId: string }>).map((p) => p.recoveryPointId),
      ).toEqual(['rp-b']);
    });

    it('answers a point by id, and 404 naming an unknown one', async () => {
      const point = makePoint({ recoveryPointId: 'rp-a' });
      await catalog.putPoint(point);

      const found = await route(deps, makeRequest({ path: '/points/rp-a' }));
      const missing = await route(deps, makeRequest({ path: '/points/rp-zz' }));

      expect(found).toEqual({ status: 200, body: point });
      expect(missing).toEqual({
        status: 404,
        body: { error: 'NotFoundError', message: 'recovery point rp-zz does not exist' },
      });
    });
  });

  describe('POST /backups and /restores', () => {
    beforeEach(async () => {
      await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    });

    it('answers 202 with the job id of an accepted backup', async () => {
      const res = await route(
        deps,
        makeRequest({ method: 'POST', path: '/backups', body: '{"target":"docker:web"}' }),
      );

      expect(res.status).toBe(202);
      expect(res.body).toEqual({
        jobId: 'job-1',
        kind: 'BACKUP',
        status: 'PENDING',
        target: 'docker:web',
        agent: 'site-1',
        recoveryPointId: 'rp-2',
        items: [{ target: 'docker:web', agent: 'site-1', recoveryPointId: 'rp-2' }],
        executionArn: executionArn('backup', 'job-1'),
      });
    });

    it('answers 202 with the job id of an accepted restore', async () => {
      await catalog.putPoint(makePoint({ recoveryPointId: 'rp-a', agent: 'site-1' }));

      const res = await route(
        deps,
        makeRequest({
          method: 'POST',
          path: '/restores',
          body: JSON.stringify({ recoveryPointId: 'rp-a', name: 'web-copy' }),
        }),
      );

      expect(res.status).toBe(202);
      expect(res.body).toMatchObject({
        jobId: 'job-1',
        kind: 'RESTORE',
        target: 'docker:web-copy',
      });
    });

    it.each([
      ['/backups', { target: 'docker:ghost' }, 404, 'TargetNotFound'],
      ['/restores', { recoveryPointId: 'rp-missing', name: 'x' }, 404, 'PointNotFound'],
      ['/restores', { recoveryPointId: 'rp-a', name: 'web' }, 409, 'NameTaken'],
    ])(
      'answers a refused %s %j with its status and error name',
      async (path, body, status, error) => {
        await catalog.putPoint(makePoint({ recoveryPointId: 'rp-a', agent: 'site-1' }));

        const res = await route(
          deps,
          makeRequest({ method: 'POST', path, body: JSON.stringify(body) }),
        );

        expect(res).toEqual({ status, body: { error, message: expect.any(String) } });
      },
    );

    it('leaves a server-side error (5xx) to the handler, which logs it', async () => {
      const res = route(
        deps,
        makeRequest({ method: 'POST', path: '/backups', body: '{"target":"lxd:c1"}' }),
      );

      await expect(res).rejects.toBeInstanceOf(AgentUnavailable);
    });
  });
});
