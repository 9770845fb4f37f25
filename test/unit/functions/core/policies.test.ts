import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  announceMissedRuns,
  createPolicy,
  deletePolicy,
  policyStatus,
  runPolicy,
  updatePolicy,
  type PolicyDeps,
  type Schedules,
} from '../../../../functions/core/policies';
import { requestBackup } from '../../../../functions/core/requests/backup';
import { startChecks } from '../../../../functions/core/checks';
import type { Policy } from '../../../../kernel/model';
import { silentLogger } from '../../../../kernel/logger';
import { Metrics } from '../../../../kernel/metrics';
import { LocalScheduler } from '../../../../local/scheduler';
import { makeAgent, makeClock } from '../../../fixtures/factories';
import { makeRequestDeps } from '../../../fixtures/fake-workflows';

const T0 = '2026-12-06T12:00:00.000Z';

function setup() {
  const { catalog, workflows, deps } = makeRequestDeps();
  const clock = makeClock(T0);
  const put: string[] = [];
  const deleted: string[] = [];
  const schedules: Schedules = {
    put: async (p: Policy) => void put.push(`${p.name} ${p.schedule} ${p.timezone}`),
    delete: async (name: string) => void deleted.push(name),
  };
  const pdeps: PolicyDeps = { ...deps, clock, schedules };
  return { catalog, workflows, deps: pdeps, clock, put, deleted };
}

describe('policies', () => {
  it('validates and stores a policy, and its schedule goes with it', async () => {
    const { catalog, deps, put, deleted } = setup();
    const p = await createPolicy(deps, {
      name: 'nightly',
      targets: ['docker:web', 'docker:app=shop', 'docker-compose:shop'],
      schedule: 'cron(0 3 * * ? *)',
      timezone: 'Europe/Paris',
      retention: { keepLast: 7, keepDaily: 14 },
      options: { consistency: 'pause' },
      verifyEvery: 3,
    });
    expect(p).toMatchObject({ runs: 0, timezone: 'Europe/Paris', flexibleWindowMinutes: 0 });
    expect(put).toEqual(['nightly cron(0 3 * * ? *) Europe/Paris']);
    await updatePolicy(deps, 'nightly', { schedule: 'rate(6 hours)', retention: { keepLast: 3 } });
    expect((await catalog.getPolicy('nightly'))?.retention).toEqual({ keepLast: 3, keepDaily: 14 });
    expect(put).toHaveLength(2);
    await deletePolicy(deps, 'nightly');
    expect(deleted).toEqual(['nightly']);
    expect(await catalog.getPolicy('nightly')).toBeUndefined();
  });

  it('refuses bad input saying what to fix, and stores nothing', async () => {
    const { catalog, deps } = setup();
    const base = { name: 'p', targets: ['docker:web'], schedule: 'rate(1 hour)' };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...base, name: 'Bad Name' }, /a policy name is/],
      [{ ...base, schedule: 'cron(0 3 * * * *)' }, /exactly one of day-of-month and day-of-week/],
      [{ ...base, schedule: undefined }, /give the schedule/],
      [{ ...base, targets: [] }, /give 1 to 100 targets/],
      [{ ...base, targets: ['web'] }, /./],
      [{ ...base, timezone: 'Nowhere/City' }, /time zone "Nowhere\/City" is not known/],
      [{ ...base, retention: { keepLast: 0 } }, /--keep-last must be a whole number of 1 or more/],
      [{ ...base, retention: { keepForever: 1 } }, /unknown retention rule keepForever/],
      [{ ...base, options: { consistency: 'frozen' } }, /consistency/],
      [{ ...base, options: { colour: 'red' } }, /options: .*colour/],
      [
        { ...base, options: { disks: { include: ['Hard disk 1'] } } },
        /disks apply to vSphere VMs.*docker:web/,
      ],
      [{ ...base, verifyEvery: -1 }, /verifyEvery must be a whole number/],
      [{ ...base, color: 'red' }, /unknown field color/],
    ];
    for (const [body, message] of cases) {
      await expect(createPolicy(deps, body), JSON.stringify(body)).rejects.toThrow(message);
    }
    expect(await catalog.listPolicies()).toEqual([]);
    await createPolicy(deps, base);
    await expect(createPolicy(deps, base)).rejects.toThrow(/exists already/);
  });

  it("takes each platform's backup options, as a backup request does, on create and update", async () => {
    const { deps } = setup();
    const p = await createPolicy(deps, {
      name: 'vms',
      targets: ['vsphere:DC0/vm/db'],
      schedule: 'rate(1 day)',
      options: { disks: { include: ['Hard disk 1'] } },
    });
    expect(p.options).toEqual({ disks: { include: ['Hard disk 1'] } });
    await expect(
      updatePolicy(deps, 'vms', { targets: ['vsphere:DC0/vm/db', 'docker:web'] }),
    ).rejects.toThrow(/disks apply to vSphere VMs.*target docker:web/);
    const q = await updatePolicy(deps, 'vms', { options: { disks: { exclude: ['Hard disk 2'] } } });
    expect(q.options).toEqual({ disks: { exclude: ['Hard disk 2'] } });
  });

  it('runs one backup per target, records the policy on the jobs, and flags what could not start', async () => {
    const { catalog, workflows, deps } = setup();
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web'] }));
    await createPolicy(deps, {
      name: 'p',
      targets: ['docker:web', 'docker:gone'],
      schedule: 'rate(1 hour)',
      options: { consistency: 'stop' },
    });
    const run = await runPolicy(deps, 'p', requestBackup);
    expect(run.jobs).toHaveLength(1);
    expect(run.refused[0]).toMatchObject({ target: 'docker:gone' });
    expect(workflows.backups[0]!.options).toEqual({ consistency: 'stop', policy: 'p' });
    expect((await catalog.getJob(run.jobs[0]!.jobId))?.policy).toBe('p');
    const status = await policyStatus(deps, (await catalog.getPolicy('p'))!);
    expect(status.runs).toBe(1);
    expect(status.flag).toMatch(/docker:gone/);
  });

  it('announces each missed run once, on the bus, from the check the stack runs every 15 minutes', async () => {
    const { catalog, deps, clock } = setup();
    const events: unknown[] = [];
    deps.jobObservers = {
      events: { put: async (e) => void events.push(e) },
      metrics: new Metrics('Stowage', () => undefined),
    };
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web'] }));
    await createPolicy(deps, {
      name: 'hourly',
      targets: ['docker:web'],
      schedule: 'rate(1 hour)',
      flexibleWindowMinutes: 10,
    });
    await createPolicy(deps, { name: 'daily', targets: ['docker:web'], schedule: 'rate(1 day)' });
    // Due at +1 h, overdue past its window and a minute's grace at +1 h 11 min.
    clock.advance(3_600_000 + 10 * 60_000 + 30_000);
    expect(await announceMissedRuns(deps)).toEqual({ checked: 2, announced: [] });
    clock.advance(60_000);
    expect(await announceMissedRuns(deps)).toEqual({ checked: 2, announced: ['hourly'] });
    expect(events).toEqual([
      {
        source: 'stowage',
        detailType: 'Policy Run Missed',
        time: clock.now(),
        resources: [],
        detail: expect.objectContaining({
          policy: 'hourly',
          dueAt: '2026-12-06T13:00:00.000Z',
          message: 'missed: the run of policy hourly due at 2026-12-06T13:00:00.000Z did not start',
        }),
      },
    ]);
    // The next checks, 15 and 30 minutes on, do not announce the same run again.
    clock.advance(15 * 60_000);
    expect((await announceMissedRuns(deps)).announced).toEqual([]);
    // A run that starts clears it; the next one missed is announced in its turn.
    await runPolicy(deps, 'hourly', requestBackup);
    // Ran at +1 h 26.5 min: the next is due at +2 h, overdue at +2 h 11 min.
    clock.advance(45 * 60_000);
    expect((await announceMissedRuns(deps)).announced).toEqual(['hourly']);
    const missed = events.filter(
      (e) => (e as { detailType: string }).detailType === 'Policy Run Missed',
    );
    expect(missed).toHaveLength(2);
  });

  it('flags a run that is overdue past its window, and a last run that failed', async () => {
    const { catalog, deps, clock } = setup();
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web'] }));
    await createPolicy(deps, {
      name: 'p',
      targets: ['docker:web'],
      schedule: 'rate(1 hour)',
      flexibleWindowMinutes: 10,
    });
    clock.advance(3_600_000 + 10 * 60_000 + 30_000);
    expect((await policyStatus(deps, (await catalog.getPolicy('p'))!)).flag).toBeUndefined();
    clock.advance(60_000);
    expect((await policyStatus(deps, (await catalog.getPolicy('p'))!)).flag).toBe(
      'missed: the run due at 2026-12-06T13:00:00.000Z did not start',
    );
    const run = await runPolicy(deps, 'p', requestBackup);
    await catalog.updateJob(
      run.jobs[0]!.jobId,
      { status: 'FAILED', error: { name: 'X', message: 'boom' } },
      ['PENDING'],
    );
    const status = await policyStatus(deps, (await catalog.getPolicy('p'))!);
    expect(status.flag).toBe(`last run ${run.jobs[0]!.jobId} FAILED: boom`);
    expect(status.nextRunAt).toBe('2026-12-06T14:00:00.000Z');
  });
});

describe('the local scheduler', () => {
  function scheduler(deps: PolicyDeps) {
    return new LocalScheduler({ deps, requestBackup, log: silentLogger });
  }

  it('fires a rate one interval after the policy was made, then every interval', async () => {
    const { catalog, workflows, deps, clock } = setup();
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web'] }));
    await createPolicy(deps, { name: 'p', targets: ['docker:web'], schedule: 'rate(1 minute)' });
    const s = scheduler(deps);
    const fired: number[] = [];
    for (let second = 0; second <= 185; second += 5) {
      const before = workflows.backups.length;
      await s.tick();
      if (workflows.backups.length > before) fired.push(second);
      clock.advance(5_000);
    }
    expect(fired).toEqual([60, 120, 180]);
  });

  it('runs slots missed while it was down once, not once per slot', async () => {
    const { catalog, workflows, deps, clock } = setup();
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web'] }));
    await createPolicy(deps, { name: 'p', targets: ['docker:web'], schedule: 'rate(1 minute)' });
    clock.advance(10 * 60_000 + 1_000); // down for ten slots
    const s = scheduler(deps);
    await s.tick();
    await s.tick();
    expect(workflows.backups).toHaveLength(1);
    // The next slot stays on the rate's grid (as EventBridge's): 12:11:00.
    clock.advance(58_000);
    await s.tick();
    expect(workflows.backups).toHaveLength(1);
    clock.advance(1_000);
    await s.tick();
    expect(workflows.backups).toHaveLength(2);
  });

  it('prunes daily at its slot, once on start for slots missed while down, and remembers across restarts', async () => {
    const { deps, clock } = setup(); // 12:00 UTC
    const statePath = join(mkdtempSync(join(tmpdir(), 'stowage-sched-')), 'prune.json');
    const prunes: string[] = [];
    const make = () =>
      new LocalScheduler({
        deps,
        requestBackup,
        log: silentLogger,
        prune: {
          schedule: 'cron(0 4 * * ? *)',
          statePath,
          run: async () => {
            prunes.push(deps.clock.now());
            return { jobId: `job-prune-${prunes.length}` };
          },
        },
      });
    let s = make();
    await s.tick(); // the first start: the first prune is at the next 04:00
    clock.advance(15 * 3600_000 + 59 * 60_000); // 03:59 the next day
    await s.tick();
    expect(prunes).toEqual([]);
    clock.advance(60_000);
    await s.tick();
    await s.tick();
    expect(prunes).toEqual(['2026-12-07T04:00:00.000Z']);
    // Down for three days: one prune on start, then the next at 04:00.
    clock.advance(3 * 86400_000 + 3600_000);
    s = make();
    await s.tick();
    await s.tick();
    expect(prunes).toEqual(['2026-12-07T04:00:00.000Z', '2026-12-10T05:00:00.000Z']);
    clock.advance(22 * 3600_000);
    await s.tick();
    expect(prunes).toHaveLength(2);
    clock.advance(3600_000);
    await s.tick();
    expect(prunes).toHaveLength(3);
  });

  /** Ends every PENDING backup job as the workflow would, each item COMPLETED. */
  async function succeedAll(catalog: PolicyDeps['catalog']) {
    for (const job of await catalog.listJobs()) {
      if (job.status !== 'PENDING' || job.kind !== 'BACKUP') continue;
      const items = job.items!.map((item) => ({ ...item, status: 'COMPLETED' as const }));
      await catalog.updateJob(job.jobId, { status: 'SUCCEEDED', items }, ['PENDING']);
    }
  }

  function checkDeps(deps: PolicyDeps) {
    const verifies: string[] = [];
    const restoreTests: Array<{ recoveryPointId: string; probe?: string }> = [];
    const accepted = (kind: 'VERIFY' | 'RESTORE_TEST', n: number) => ({
      jobId: `job-${kind.toLowerCase()}-${n}`,
      kind,
      status: 'PENDING' as const,
      target: 't',
      agent: 'a',
      executionArn: 'x',
    });
    return {
      verifies,
      restoreTests,
      deps: {
        ...deps,
        requestVerify: async (_d: unknown, body: { recoveryPointId: string }) => {
          verifies.push(body.recoveryPointId);
          return accepted('VERIFY', verifies.length);
        },
        requestRestoreTest: async (
          _d: unknown,
          body: { recoveryPointId: string; probe?: string },
        ) => {
          restoreTests.push(body);
          return accepted('RESTORE_TEST', restoreTests.length);
        },
      },
    };
  }

  it("asks every Nth run's backups to verify their points, which they do once they succeeded", async () => {
    const { catalog, workflows, deps, clock } = setup();
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web'] }));
    await createPolicy(deps, {
      name: 'p',
      targets: ['docker:web'],
      schedule: 'rate(1 minute)',
      verifyEvery: 2,
    });
    const s = scheduler(deps);
    const checks = checkDeps(deps);
    for (let i = 0; i < 4; i++) {
      clock.advance(60_000);
      await s.tick();
      await succeedAll(catalog);
    }
    // Runs 2 and 4 carry the checks, to the workflow (AWS and local mode run the same ASL).
    expect(workflows.backups.map((b) => b.checks)).toEqual([
      undefined,
      { verify: true },
      undefined,
      { verify: true },
    ]);
    const jobs = (await catalog.listJobs()).filter((j) => j.kind === 'BACKUP').reverse();
    for (const job of jobs) await startChecks(checks.deps, job.jobId);
    expect(checks.verifies).toEqual([jobs[1]!.recoveryPointId, jobs[3]!.recoveryPointId]);
    // Recorded on the job; a retried call starts nothing twice.
    expect((await catalog.getJob(jobs[1]!.jobId))?.checks?.started).toEqual([
      { kind: 'VERIFY', recoveryPointId: jobs[1]!.recoveryPointId, jobId: 'job-verify-1' },
    ]);
    expect(await startChecks(checks.deps, jobs[1]!.jobId)).toMatchObject({ started: [] });
    expect(checks.verifies).toHaveLength(2);
  });

  it('starts no check for a job that failed, and records a check that could not start', async () => {
    const { catalog, deps, clock } = setup();
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web'] }));
    await createPolicy(deps, {
      name: 'p',
      targets: ['docker:web'],
      schedule: 'rate(1 minute)',
      verifyEvery: 1,
    });
    const run = await runPolicy(deps, 'p', requestBackup);
    await catalog.updateJob(run.jobs[0]!.jobId, { status: 'FAILED' }, ['PENDING']);
    const checks = checkDeps(deps);
    expect(await startChecks(checks.deps, run.jobs[0]!.jobId)).toMatchObject({ started: [] });
    clock.advance(60_000);
    const second = await runPolicy(deps, 'p', requestBackup);
    await succeedAll(catalog);
    const refusing = {
      ...checks.deps,
      requestVerify: async () => {
        throw new Error('agent gone');
      },
    };
    const out = await startChecks(refusing, second.jobs[0]!.jobId);
    expect(out.refused).toEqual([
      {
        kind: 'VERIFY',
        recoveryPointId: second.jobs[0]!.recoveryPointId,
        error: 'Error: agent gone',
      },
    ]);
    expect((await catalog.getJob(second.jobs[0]!.jobId))?.checks?.started?.[0]?.error).toBe(
      'Error: agent gone',
    );
  });

  it('restore-tests the Docker and LXD points of every Nth run with the policy probe', async () => {
    const { catalog, deps, clock } = setup();
    await catalog.putAgent(makeAgent({ agent: 'local', targets: ['docker:web', 'path:/srv'] }));
    await createPolicy(deps, {
      name: 'p',
      targets: ['docker:web', 'path:/srv'],
      schedule: 'rate(1 minute)',
      restoreTestEvery: 3,
      restoreTestProbe: 'wget -qO- localhost',
    });
    const s = scheduler(deps);
    const checks = checkDeps(deps);
    for (let i = 0; i < 3; i++) {
      clock.advance(60_000);
      await s.tick();
      await succeedAll(catalog);
    }
    for (const job of await catalog.listJobs()) await startChecks(checks.deps, job.jobId);
    const dockerPoints = (await catalog.listJobs())
      .filter((j) => j.target === 'docker:web')
      .map((j) => j.recoveryPointId);
    // The third run's docker point only: path points are not restore-tested.
    expect(checks.restoreTests).toEqual([
      { recoveryPointId: dockerPoints[0], probe: 'wget -qO- localhost' },
    ]);
    expect(checks.verifies).toEqual([]);
    expect((await catalog.getPolicy('p'))?.restoreTestEvery).toBe(3);
    await updatePolicy(deps, 'p', { restoreTestEvery: 0, restoreTestProbe: '' });
    const after = await catalog.getPolicy('p');
    expect(after?.restoreTestEvery).toBeUndefined();
    expect(after?.restoreTestProbe).toBeUndefined();
  });
});
