/**
 * What `stowage start` settles on start of the work its previous process left (local/interrupted.ts):
 * jobs that can never finish end Interrupted, and the checks a finished backup asked for but whose
 * workflow stopped before starting them are started, once.
 */
import { describe, expect, it } from 'vitest';
import { settleInterrupted, type InterruptedWork } from '../../../local/interrupted';
import { silentLogger } from '../../../kernel/logger';
import { makeJob } from '../../fixtures/factories';
import { makeRequestDeps } from '../../fixtures/fake-workflows';

const BACKUP = 'arn:aws:states:us-east-1:000000000000:stateMachine:stowage-backup';
const VERIFY = 'arn:aws:states:us-east-1:000000000000:stateMachine:stowage-verify';
const BEFORE = '2026-12-07T03:00:00.000Z';
const STARTED = '2026-12-07T04:00:00.000Z';

function setup() {
  const { catalog, deps } = makeRequestDeps();
  const verifies: string[] = [];
  const checksDeps = {
    ...deps,
    log: silentLogger,
    requestVerify: async (_d: unknown, body: { recoveryPointId: string }) => {
      verifies.push(body.recoveryPointId);
      return {
        jobId: `job-verify-${verifies.length}`,
        kind: 'VERIFY' as const,
        status: 'PENDING' as const,
        target: 'path:/srv',
        agent: 'local',
        executionArn: `arn:verify-${verifies.length}`,
      };
    },
  };
  return { catalog, deps: checksDeps, verifies };
}

const input = (jobId: string) => JSON.stringify({ jobId });

describe('settling what the previous stowage start left', () => {
  it('ends the jobs that can never finish Interrupted, and only those', async () => {
    const { catalog, deps } = setup();
    const running = makeJob({ status: 'RUNNING', createdAt: BEFORE });
    const neverStarted = makeJob({ kind: 'VERIFY', createdAt: BEFORE });
    const started = makeJob({ kind: 'VERIFY', createdAt: BEFORE });
    const ours = makeJob({ kind: 'VERIFY', createdAt: STARTED });
    const ended = makeJob({ status: 'SUCCEEDED', createdAt: BEFORE });
    for (const job of [running, neverStarted, started, ours, ended]) await catalog.createJob(job);
    const work: InterruptedWork = {
      orphans: [
        { stateMachineArn: BACKUP, input: input(running.jobId) },
        { stateMachineArn: VERIFY, input: input(started.jobId) },
        { stateMachineArn: BACKUP, input: 'not json' },
        { stateMachineArn: BACKUP, input: input('job-not-in-the-catalog') },
      ],
      hasExecutionNamed: (name) => name === running.jobId || name === started.jobId,
      backupStateMachineArn: BACKUP,
      startedAt: STARTED,
    };

    const out = await settleInterrupted(deps, work);

    expect(out.failed.sort()).toEqual([running.jobId, neverStarted.jobId, started.jobId].sort());
    for (const jobId of out.failed) {
      const job = await catalog.getJob(jobId);
      expect(job).toMatchObject({ status: 'FAILED', error: { name: 'Interrupted' } });
      expect(job!.error!.message).toMatch(/run it again/);
    }
    expect((await catalog.getJob(neverStarted.jobId))!.error!.message).toMatch(/before this job/);
    expect((await catalog.getJob(ours.jobId))!.status).toBe('PENDING');
    expect((await catalog.getJob(ended.jobId))!.status).toBe('SUCCEEDED');
    expect(out.checksStarted).toEqual([]);
  });

  it('starts the checks a finished backup asked for, once, and none for one that failed', async () => {
    const { catalog, deps, verifies } = setup();
    const finished = makeJob({ target: 'path:/srv', createdAt: BEFORE, checks: { verify: true } });
    finished.status = 'SUCCEEDED';
    finished.items = finished.items!.map((i) => ({ ...i, status: 'COMPLETED' }));
    const cut = makeJob({ status: 'RUNNING', createdAt: BEFORE, checks: { verify: true } });
    for (const job of [finished, cut]) await catalog.createJob(job);
    const work: InterruptedWork = {
      orphans: [
        { stateMachineArn: BACKUP, input: input(finished.jobId) },
        { stateMachineArn: BACKUP, input: input(cut.jobId) },
      ],
      hasExecutionNamed: () => true,
      backupStateMachineArn: BACKUP,
      startedAt: STARTED,
    };

    const out = await settleInterrupted(deps, work);

    expect(verifies).toEqual([finished.recoveryPointId]);
    expect(out.checksStarted).toEqual([
      { backupJobId: finished.jobId, kind: 'VERIFY', jobId: 'job-verify-1' },
    ]);
    expect(out.failed).toEqual([cut.jobId]);
    expect((await catalog.getJob(finished.jobId))!.status).toBe('SUCCEEDED');
    expect((await catalog.getJob(finished.jobId))!.checks!.started).toEqual([
      { kind: 'VERIFY', recoveryPointId: finished.recoveryPointId, jobId: 'job-verify-1' },
    ]);
    // A second start (the same orphan record again) starts nothing twice.
    expect((await settleInterrupted(deps, work)).checksStarted).toEqual([]);
    expect(verifies).toHaveLength(1);
  });
});
