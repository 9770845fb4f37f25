import { describe, expect, it } from 'vitest';
import {
  planPrune,
  pruneSummary,
  requestPrune,
  runScheduledPrune,
} from '../../../../functions/core/prune';
import type { Policy } from '../../../../kernel/model';
import { makeAgent, makeClock, makeJob, makePoint } from '../../../fixtures/factories';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

const at = (day: number) => new Date(Date.UTC(2025, 2, day, 10)).toISOString();

function policy(overrides: Partial<Policy> = {}): Policy {
  return {
    name: 'nightly',
    targets: ['docker:web'],
    schedule: 'cron(0 3 * * ? *)',
    timezone: 'UTC',
    flexibleWindowMinutes: 0,
    retention: { keepLast: 2 },
    options: {},
    createdAt: at(1),
    updatedAt: at(1),
    runs: 0,
    ...overrides,
  };
}

async function setup() {
  const catalog = new MemoryCatalog();
  const clock = makeClock(at(20));
  for (let day = 1; day <= 5; day++) {
    await catalog.putPoint(makePoint({ recoveryPointId: `rp-${day}`, createdAt: at(day) }));
  }
  await catalog.putPoint(
    makePoint({ recoveryPointId: 'rp-db', target: 'docker:db', createdAt: at(1) }),
  );
  await catalog.createPolicy(policy());
  return { catalog, clock };
}

describe('prune plan', () => {
  it('deletes the catalog items retention expires, with why, and keeps what no policy covers', async () => {
    const deps = await setup();
    const plan = await planPrune(deps, { jobId: 'job-1', dryRun: false });
    expect(plan.deletePoints.sort()).toEqual(['rp-1', 'rp-2', 'rp-3']);
    expect(plan.expired[0]!.reasons[0]).toMatch(/^expired/);
    expect(plan.kept).toBe(3);
    expect((await deps.catalog.listPoints()).map((p) => p.recoveryPointId).sort()).toEqual([
      'rp-4',
      'rp-5',
      'rp-db',
    ]);
  });

  it('changes nothing in a dry run', async () => {
    const deps = await setup();
    const plan = await planPrune(deps, { jobId: 'job-1', dryRun: true });
    expect(plan.deletePoints).toHaveLength(3);
    expect(await deps.catalog.listPoints()).toHaveLength(6);
  });

  it('keeps an expired point a running restore reads, for the next prune', async () => {
    const deps = await setup();
    await deps.catalog.createJob(
      makeJob({ jobId: 'job-r', kind: 'RESTORE', status: 'RUNNING', recoveryPointId: 'rp-2' }),
    );
    const plan = await planPrune(deps, { jobId: 'job-1', dryRun: false });
    expect(plan.deletePoints.sort()).toEqual(['rp-1', 'rp-3']);
    expect(plan.busy).toEqual([{ recoveryPointId: 'rp-2', jobId: 'job-r' }]);
    expect(await deps.catalog.getPoint('rp-2')).toBeDefined();
  });

  it('hands the mark the points of ended backups that were never committed, so their manifests go', async () => {
    const deps = await setup();
    // The agent succeeded (its manifest is in the store), then a cancel landed before
    // commit-point: the item is CANCELLED and no catalog point exists.
    await deps.catalog.createJob(
      makeJob({
        jobId: 'job-c',
        status: 'CANCELLED',
        endedAt: at(19),
        recoveryPointId: 'rp-cancelled',
        items: [
          {
            target: 'docker:web',
            agent: 'site-1',
            recoveryPointId: 'rp-cancelled',
            status: 'CANCELLED',
          },
        ],
      }),
    );
    // A backup of two targets: one committed (its point stays), one whose commit was refused.
    await deps.catalog.createJob(
      makeJob({
        jobId: 'job-p',
        status: 'PARTIALLY_FAILED',
        endedAt: at(19),
        items: [
          { target: 'docker:web', agent: 'site-1', recoveryPointId: 'rp-5', status: 'COMPLETED' },
          { target: 'docker:db', agent: 'site-1', recoveryPointId: 'rp-refused', status: 'FAILED' },
        ],
      }),
    );
    // Still running: its agent may be writing the manifest now.
    await deps.catalog.createJob(
      makeJob({ jobId: 'job-r', status: 'RUNNING', recoveryPointId: 'rp-running' }),
    );

    const plan = await planPrune(deps, { jobId: 'job-1', dryRun: false });

    expect(plan.uncommitted?.sort()).toEqual(['rp-cancelled', 'rp-refused']);
    expect(plan.deletePoints.sort()).toEqual([
      'rp-1',
      'rp-2',
      'rp-3',
      'rp-cancelled',
      'rp-refused',
    ]);
    // They are not listed as expired points: they never were points.
    expect(plan.expired.map((e) => e.recoveryPointId).sort()).toEqual(['rp-1', 'rp-2', 'rp-3']);
    expect(await deps.catalog.getPoint('rp-5')).toBeDefined();
  });

  it("counts the uncommitted manifests the mark deleted on the prune's record", () => {
    const summary = pruneSummary(
      false,
      {
        deletePoints: ['rp-1', 'rp-cancelled', 'rp-refused'],
        expired: [{ recoveryPointId: 'rp-1', target: 'docker:web', reasons: ['expired'] }],
        busy: [],
        kept: 2,
        uncommitted: ['rp-cancelled', 'rp-refused'],
      },
      {
        markId: 'm',
        // rp-refused never got a manifest: nothing to delete.
        pointsDeleted: ['rp-1', 'rp-cancelled'],
        pointsKept: [],
        packs: 0,
        bytes: 0,
        heldBy: [],
      },
      undefined,
      [],
    );
    expect(summary.pointsDeleted).toBe(1);
    expect(summary.uncommittedDeleted).toBe(1);
  });

  it('looks for uncommitted points only since a day before the previous prune, and never for `points delete`', async () => {
    const deps = await setup();
    const cancelled = (jobId: string, rp: string, endedAt: string) =>
      makeJob({
        jobId,
        status: 'CANCELLED',
        createdAt: endedAt,
        endedAt,
        items: [
          { target: 'docker:web', agent: 'site-1', recoveryPointId: rp, status: 'CANCELLED' },
        ],
      });
    await deps.catalog.createJob(cancelled('job-old', 'rp-old', at(10)));
    await deps.catalog.createJob({
      ...makeJob({ jobId: 'job-prune', kind: 'PRUNE', status: 'SUCCEEDED', createdAt: at(15) }),
      prune: {
        dryRun: false,
        points: [],
        pointsDeleted: 0,
        pointsKept: 0,
        busy: [],
        packsFound: 0,
        bytesFound: 0,
        packsDeleted: 0,
        chunksDeleted: 0,
        bytesFreed: 0,
        packsRepacked: 0,
        bytesRewritten: 0,
        waitedFor: [],
      },
    });
    await deps.catalog.createJob(cancelled('job-new', 'rp-new', at(18)));

    const plan = await planPrune(deps, { jobId: 'job-1', dryRun: true });
    expect(plan.uncommitted).toEqual(['rp-new']);

    const named = await planPrune(deps, { jobId: 'job-2', dryRun: true, points: ['rp-db'] });
    expect(named.deletePoints).toEqual(['rp-db']);
  });

  it('deletes exactly the points `points delete` names, retention aside', async () => {
    const deps = await setup();
    const plan = await planPrune(deps, { jobId: 'job-1', dryRun: false, points: ['rp-db'] });
    expect(plan.deletePoints).toEqual(['rp-db']);
    expect(await deps.catalog.getPoint('rp-db')).toBeUndefined();
    expect(await deps.catalog.listPoints()).toHaveLength(5);
  });
});

describe('prune requests', () => {
  function deps(catalog: MemoryCatalog) {
    const started: unknown[] = [];
    let n = 0;
    return {
      started,
      deps: {
        catalog,
        clock: makeClock(at(20)),
        newId: (prefix: 'job' | 'rp') => `${prefix}-${++n}`,
        queueUrlFor: (agent: string) => `queue://${agent}`,
        startPrune: async (input: unknown) => {
          started.push(input);
          return 'arn:prune';
        },
      },
    };
  }

  it('starts one prune on the agent that reported last, and refuses a second while it runs', async () => {
    const { catalog } = await setup();
    await catalog.putAgent(makeAgent({ agent: 'old', seenAt: at(1) }));
    await catalog.putAgent(makeAgent({ agent: 'new', seenAt: at(2) }));
    const { deps: d, started } = deps(catalog);
    const job = await requestPrune(d, { dryRun: true, repackBelow: 30 });
    expect(job).toMatchObject({ kind: 'PRUNE', agent: 'new', status: 'PENDING' });
    expect(started).toEqual([
      { jobId: job.jobId, agent: 'new', queueUrl: 'queue://new', dryRun: true, repackBelow: 30 },
    ]);
    await expect(requestPrune(d, {})).rejects.toThrow(/is still running; one prune runs at a time/);
  });

  it('runs on the maintenance agent when one is required (AWS), and refuses while it has not reported', async () => {
    const { catalog } = await setup();
    await catalog.putAgent(makeAgent({ agent: 'site-1', seenAt: at(2) }));
    const { deps: d, started } = deps(catalog);
    const aws = { ...d, pruneAgent: 'maintenance' };

    await expect(requestPrune(aws, {})).rejects.toThrow(
      /prunes run on agent maintenance.*has not reported/,
    );
    expect(started).toEqual([]);

    await catalog.putAgent(makeAgent({ agent: 'maintenance', seenAt: at(1) }));
    const job = await requestPrune(aws, {});
    expect(job).toMatchObject({ agent: 'maintenance' });
    expect(started).toEqual([
      {
        jobId: job.jobId,
        agent: 'maintenance',
        queueUrl: 'queue://maintenance',
        dryRun: false,
        repackBelow: 50,
      },
    ]);
  });

  it('runs the scheduled prune, and skips it (not an error) while another prune runs', async () => {
    const { catalog } = await setup();
    await catalog.putAgent(makeAgent({ agent: 'a', seenAt: at(1) }));
    const { deps: d, started } = deps(catalog);
    const first = await runScheduledPrune(d);
    expect(first).toEqual({ jobId: expect.stringMatching(/^job-/) });
    expect(started).toEqual([expect.objectContaining({ dryRun: false, repackBelow: 50 })]);
    expect(await runScheduledPrune(d)).toEqual({
      skipped: expect.stringMatching(/still running; one prune runs at a time/),
    });
    // No agent to run it is an error (in AWS, the run-policy alarm fires): nothing is deleted.
    const empty = deps((await setup()).catalog).deps;
    await expect(runScheduledPrune({ ...empty, pruneAgent: 'maintenance' })).rejects.toThrow(
      /has not reported/,
    );
  });

  it('refuses bad input and unknown points before any job exists', async () => {
    const { catalog } = await setup();
    await catalog.putAgent(makeAgent({ agent: 'a' }));
    const { deps: d } = deps(catalog);
    await expect(requestPrune(d, { dryRun: 'yes' })).rejects.toThrow(
      /dryRun must be true or false/,
    );
    await expect(requestPrune(d, { points: ['rp-none'] })).rejects.toThrow(
      /recovery point rp-none does not exist/,
    );
    await expect(requestPrune(d, { points: [] })).rejects.toThrow(/list of 1 to 1000/);
    for (const repackBelow of [-1, 101, 12.5, '50']) {
      await expect(requestPrune(d, { repackBelow })).rejects.toThrow(
        /repackBelow is a whole percentage from 0/,
      );
    }
    await expect(
      requestPrune(d, { dryRun: true, keepLast: 3 } as { dryRun: boolean }),
    ).rejects.toThrow(/unknown field keepLast/);
    expect(await catalog.listJobs()).toEqual([]);
  });
});
