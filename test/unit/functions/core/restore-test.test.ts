import { beforeEach, describe, expect, it } from 'vitest';
import {
  markJobFailed,
  markJobStarted,
  markRestoreSucceeded,
} from '../../../../functions/core/jobs';
import type { RequestDeps } from '../../../../functions/core/requests/launch';
import { requestRestoreTest, sandboxName } from '../../../../functions/core/requests/restore-test';
import { AgentUnavailable, PointNotFound, ValidationError } from '../../../../kernel/errors';
import { isValidInstanceName } from '../../../../kernel/platforms/lxd';
import type { RestoreTestOutcome } from '../../../../statemachines/contracts';
import { makeAgent, makeClock, makePoint, T0 } from '../../../fixtures/factories';
import { makeRequestDeps, type FakeWorkflows } from '../../../fixtures/fake-workflows';
import type { MemoryCatalog } from '../../../fixtures/memory-catalog';

const queueUrlFor = (agent: string) => `http://127.0.0.1:9324/000000000000/stowage-site-${agent}`;

let catalog: MemoryCatalog;
let workflows: FakeWorkflows;
let deps: RequestDeps;

beforeEach(() => {
  ({ catalog, workflows, deps } = makeRequestDeps(queueUrlFor));
});

describe('requestRestoreTest', () => {
  it('starts the restore workflow into a sandbox named after the job, with the probe for sh -c', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-7', target: 'docker:web' }));

    const accepted = await requestRestoreTest(deps, {
      recoveryPointId: 'rp-7',
      probe: 'wget -qO- localhost/health',
      probeTimeoutSeconds: 30,
    });

    const sandbox = `docker:${sandboxName(accepted.jobId)}`;
    expect(accepted).toMatchObject({
      kind: 'RESTORE_TEST',
      status: 'PENDING',
      target: sandbox,
      agent: 'site-1',
      recoveryPointId: 'rp-7',
    });
    expect(workflows.restores).toEqual([
      {
        jobId: accepted.jobId,
        recoveryPointId: 'rp-7',
        source: 'docker:web',
        target: sandbox,
        agent: 'site-1',
        queueUrl: queueUrlFor('site-1'),
        inPlace: false,
        options: {
          test: { probe: ['sh', '-c', 'wget -qO- localhost/health'], probeTimeoutSeconds: 30 },
        },
      },
    ]);
    expect((await catalog.getJob(accepted.jobId))?.source).toBe('docker:web');
  });

  it('names every sandbox validly for Docker and LXD, and uniquely per job', () => {
    const jobIds = ['job-01m81fw6wmgm85ecgqt4fgb7qz', 'job-01m81fw6wmgm85ecgqt4fgb7r0', 'job-1'];
    const names = jobIds.map(sandboxName);
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) {
      expect(name).toMatch(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/);
      expect(isValidInstanceName(name)).toBe(true);
    }
  });

  it('refuses points of platforms that do not run, an unknown point and an unknown field', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['path:/srv', 'lxd:c1'] }));
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-p', target: 'path:/srv' }));

    await expect(requestRestoreTest(deps, { recoveryPointId: 'rp-p' })).rejects.toThrow(
      /Docker containers and LXD instances.*stowage verify rp-p/,
    );
    await expect(requestRestoreTest(deps, { recoveryPointId: 'rp-none' })).rejects.toBeInstanceOf(
      PointNotFound,
    );
    await expect(
      requestRestoreTest(deps, { recoveryPointId: 'rp-p', network: 'none' }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      requestRestoreTest(deps, { recoveryPointId: 'rp-p', probeTimeoutSeconds: 0 }),
    ).rejects.toThrow(/probeTimeoutSeconds/);
    expect(workflows.restores).toEqual([]);
    expect(await catalog.listJobs()).toEqual([]);
  });

  it('refuses when the agent of the point no longer serves its platform', async () => {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-l', target: 'lxd:c1' }));

    await expect(requestRestoreTest(deps, { recoveryPointId: 'rp-l' })).rejects.toBeInstanceOf(
      AgentUnavailable,
    );
  });
});

function makeOutcome(overrides: Partial<RestoreTestOutcome> = {}): RestoreTestOutcome {
  return {
    passed: true,
    sandbox: 'docker:stowage-rt-1',
    rtoMs: 4200,
    restoreMs: 3900,
    probe: { command: ['sh', '-c', 'true'], exitCode: 0, output: '' },
    removed: true,
    ...overrides,
  };
}

describe('recording a restore test', () => {
  const clock = makeClock(T0);

  async function startedTest() {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-7', target: 'docker:web' }));
    const { jobId } = await requestRestoreTest(deps, { recoveryPointId: 'rp-7', probe: 'true' });
    await markJobStarted({ catalog, clock }, jobId, 'arn:exec');
    return jobId;
  }

  const result = (test: RestoreTestOutcome) => ({
    restoredTarget: test.sandbox,
    startedAt: T0,
    completedAt: T0,
    bytesWritten: 1234,
    test,
  });

  it('puts a pass and its RTO on the point and ends the job SUCCEEDED', async () => {
    const jobId = await startedTest();

    const job = await markRestoreSucceeded({ catalog, clock }, jobId, result(makeOutcome()));

    expect(job.status).toBe('SUCCEEDED');
    expect(job.restoreTest).toMatchObject({ passed: true, rtoMs: 4200 });
    expect((await catalog.getPoint('rp-7'))?.restoreTest).toEqual({
      ...makeOutcome(),
      jobId,
      testedAt: T0,
    });
  });

  it('puts a failed probe on the point and ends the job FAILED naming the probe and its output', async () => {
    const jobId = await startedTest();
    const failed = makeOutcome({
      passed: false,
      probe: { command: ['sh', '-c', 'check'], exitCode: 2, output: 'table missing\n' },
    });

    const job = await markRestoreSucceeded({ catalog, clock }, jobId, result(failed));

    expect(job.status).toBe('FAILED');
    expect(job.error?.name).toBe('RestoreTestFailed');
    expect(job.error?.message).toMatch(/sh -c check.*exited with code 2.*table missing/);
    expect((await catalog.getPoint('rp-7'))?.restoreTest).toMatchObject({
      passed: false,
      probe: { exitCode: 2 },
    });
  });

  it('puts a failed test on the point when the task itself failed (no agent, heartbeat lost)', async () => {
    const jobId = await startedTest();
    await catalog.updatePoint('rp-7', {
      restoreTest: { ...makeOutcome(), jobId: 'job-old', testedAt: T0 },
    });

    await markJobFailed({ catalog, clock }, jobId, {
      name: 'States.HeartbeatTimeout',
      message: 'the agent stopped reporting',
    });

    expect((await catalog.getPoint('rp-7'))?.restoreTest).toEqual({
      passed: false,
      sandbox: (await catalog.getJob(jobId))?.target,
      jobId,
      testedAt: T0,
      error: { name: 'States.HeartbeatTimeout', message: 'the agent stopped reporting' },
    });
  });

  it('leaves the point alone when the job had already ended (a cancelled test reports late)', async () => {
    const jobId = await startedTest();
    await markJobFailed({ catalog, clock }, jobId, { name: 'Cancelled', message: 'cancelled' });
    const before = (await catalog.getPoint('rp-7'))?.restoreTest;

    const job = await markRestoreSucceeded({ catalog, clock }, jobId, result(makeOutcome()));

    expect(job.status).toBe('FAILED');
    expect((await catalog.getPoint('rp-7'))?.restoreTest).toEqual(before);
  });
});
