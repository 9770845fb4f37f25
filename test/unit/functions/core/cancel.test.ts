import { beforeEach, describe, expect, it } from 'vitest';
import { cancelJob, cancellationStatus } from '../../../../functions/core/cancel';
import { commitRecoveryPoint, markJobStarted } from '../../../../functions/core/jobs';
import { ConflictError, NotFoundError } from '../../../../kernel/errors';
import type { Job } from '../../../../kernel/model';
import { TERMINAL_STATUSES } from '../../../../statemachines/contracts';
import { makeBackupResult, makeClock, makeJob } from '../../../fixtures/factories';
import { FakeWorkflows } from '../../../fixtures/fake-workflows';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

let catalog: MemoryCatalog;
let clock: ReturnType<typeof makeClock>;
let workflows: FakeWorkflows;
let deps: { catalog: MemoryCatalog; clock: ReturnType<typeof makeClock>; workflows: FakeWorkflows };

beforeEach(() => {
  catalog = new MemoryCatalog();
  clock = makeClock();
  workflows = new FakeWorkflows();
  deps = { catalog, clock, workflows };
});

/** A job in the catalog whose execution the fake workflows started. */
async function given(overrides: Partial<Job> = {}): Promise<Job> {
  const job = makeJob({ status: 'RUNNING', ...overrides });
  await catalog.createJob(job);
  if (job.kind === 'RESTORE') await workflows.startRestore({ jobId: job.jobId } as never);
  else await workflows.startBackup({ jobId: job.jobId } as never);
  return job;
}

const commit = (job: Job, itemIndex = 0) =>
  commitRecoveryPoint(deps, {
    jobId: job.jobId,
    itemIndex,
    recoveryPointId: job.items![itemIndex]!.recoveryPointId,
    target: job.items![itemIndex]!.target,
    agent: job.agent,
    result: makeBackupResult({ recoveryPointId: job.items![itemIndex]!.recoveryPointId }),
  });

describe('cancelJob', () => {
  it('ends a running backup CANCELLED, stops its execution, and says no point is made', async () => {
    const job = await given();

    const answer = await cancelJob(deps, job.jobId);

    expect(answer).toMatchObject({ status: 'CANCELLED', cancelled: true, settled: true });
    expect(answer.message).toContain('no recovery point is made');
    const after = await catalog.getJob(job.jobId);
    expect(after).toMatchObject({
      status: 'CANCELLED',
      endedAt: clock.now(),
      error: { name: 'Cancelled' },
    });
    expect(after?.items?.map((i) => i.status)).toEqual(['CANCELLED']);
    expect(workflows.stopped.map((s) => s.jobId)).toEqual([job.jobId]);
  });

  it('cancels a PENDING job whose execution has not started, stopping nothing', async () => {
    const job = makeJob({ status: 'PENDING' });
    await catalog.createJob(job);

    const answer = await cancelJob(deps, job.jobId);

    expect(answer.status).toBe('CANCELLED');
    expect(workflows.stopped).toEqual([]);
    // Its workflow, if it starts after all, fails at its first step.
    await expect(markJobStarted(deps, job.jobId, 'arn:late')).rejects.toBeInstanceOf(ConflictError);
  });

  it.each(TERMINAL_STATUSES)(
    'refuses a job that ended %s with ConflictError, changing nothing',
    async (status) => {
      const job = await given({ status, endedAt: clock.now() });

      await expect(cancelJob(deps, job.jobId)).rejects.toThrow(
        new ConflictError(
          `job ${job.jobId} has ended (${status} at ${clock.now()}): there is nothing to cancel`,
        ),
      );
      expect(await catalog.getJob(job.jobId)).toEqual(job);
      expect(workflows.stopped).toEqual([]);
    },
  );

  it('answers NotFoundError for a job that does not exist', async () => {
    await expect(cancelJob(deps, 'job-missing')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('lets an in-place restore past its point of no return finish, and says so', async () => {
    const job = await given({ kind: 'RESTORE', pointOfNoReturnAt: clock.now(), items: undefined });
    clock.advance(1000);

    const answer = await cancelJob(deps, job.jobId);

    expect(answer).toMatchObject({
      status: 'RUNNING',
      cancelled: false,
      pastPointOfNoReturn: true,
      settled: false,
    });
    expect(answer.message).toContain('past its point of no return');
    expect(answer.message).toContain('finishes');
    expect(await catalog.getJob(job.jobId)).toEqual({ ...job, cancelRequestedAt: clock.now() });
    expect(workflows.stopped).toEqual([]);
  });

  it('says an in-place restore cancelled before its point of no return leaves the target as it was', async () => {
    const job = await given({ kind: 'RESTORE', items: undefined });

    const answer = await cancelJob(deps, job.jobId);

    expect(answer.cancelled).toBe(true);
    expect(answer.message).toContain(`${job.target} is as it was before it`);
  });

  it('the point of no return marked just before the cancel wins: the cancel does not stop it', async () => {
    const job = await given({ kind: 'RESTORE', items: undefined });
    // The agent marks it between the cancel's read and its write.
    const getJob = catalog.getJob.bind(catalog);
    let first = true;
    catalog.getJob = async (id) => {
      const read = await getJob(id);
      if (first) {
        first = false;
        await catalog.updateJob(id, { pointOfNoReturnAt: clock.now() }, ['RUNNING']);
      }
      return read;
    };

    const answer = await cancelJob(deps, job.jobId);

    expect(answer).toMatchObject({ cancelled: false, pastPointOfNoReturn: true });
    expect((await getJob(job.jobId))?.status).toBe('RUNNING');
    expect(workflows.stopped).toEqual([]);
  });

  it("an agent's claim marked past its point of no return wins over the cancel, and a cancel's mark over the agent", async () => {
    const job = await given({ kind: 'RESTORE', items: undefined });
    const claim = { site: 'site-1', jobId: job.jobId, claimId: 'claim-aaaaaaaa' };
    await catalog.putRunToken(claim, 'run-1');
    await catalog.takeRunToken(claim);
    expect(await catalog.markPointOfNoReturn(claim, clock.now())).toBe(true);

    const answer = await cancelJob(deps, job.jobId);

    expect(answer).toMatchObject({ cancelled: false, pastPointOfNoReturn: true });
    expect(workflows.stopped).toEqual([]);

    const other = await given({ jobId: 'job-other-restore', kind: 'RESTORE', items: undefined });
    const late = { site: 'site-1', jobId: other.jobId, claimId: 'claim-bbbbbbbb' };
    await catalog.putRunToken(late, 'run-2');
    await catalog.takeRunToken(late);
    expect((await cancelJob(deps, other.jobId)).cancelled).toBe(true);
    expect(await catalog.markPointOfNoReturn(late, clock.now())).toBe(false);
  });

  it('counts the tasks agents took and have not ended: settled only once they all ended', async () => {
    const job = await given();
    const a = { site: 'site-1', jobId: job.jobId, claimId: 'claim-aaaaaaaa' };
    await catalog.putRunToken(a, 'run-1');
    await catalog.takeRunToken(a);
    // Handed over, never taken.
    await catalog.putRunToken({ ...a, claimId: 'claim-bbbbbbbb' }, 'run-2');

    const answer = await cancelJob(deps, job.jobId);
    expect(answer).toMatchObject({ tasksRunning: 1, tasksEnded: 0, settled: false });
    expect(answer.message).toContain('1 task is stopping');

    await catalog.endTask(a, {
      endedAt: clock.now(),
      outcome: 'stopped',
    });
    expect(await cancellationStatus(deps, job.jobId)).toMatchObject({
      tasksRunning: 0,
      tasksEnded: 1,
      settled: true,
    });
  });
});

describe('a cancelled backup never gains a point', () => {
  it('refuses the commit of an item that was running when the job was cancelled', async () => {
    const job = await given();
    await cancelJob(deps, job.jobId);

    await expect(commit(job)).rejects.toBeInstanceOf(ConflictError);

    expect(await catalog.listPoints()).toEqual([]);
  });

  it('keeps the point of a target that completed before the cancel, and cancels the rest', async () => {
    const item = (n: number) => ({
      target: `docker:t${n}`,
      agent: 'site-1',
      recoveryPointId: `rp-t${n}`,
      status: 'RUNNING' as const,
    });
    const job = await given({ items: [item(1), item(2)], recoveryPointId: undefined });
    await commit(job, 0);

    const answer = await cancelJob(deps, job.jobId);
    await expect(commit(job, 1)).rejects.toBeInstanceOf(ConflictError);

    expect(answer.message).toContain('targets that completed before the cancel keep their points');
    expect((await catalog.getJob(job.jobId))?.items?.map((i) => i.status)).toEqual([
      'COMPLETED',
      'CANCELLED',
    ]);
    expect((await catalog.listPoints()).map((p) => p.recoveryPointId)).toEqual(['rp-t1']);
  });

  it('a commit racing the cancel either completes its item with its point or writes neither', async () => {
    for (let round = 0; round < 20; round++) {
      catalog = new MemoryCatalog();
      deps = { catalog, clock, workflows };
      const job = await given();
      const yieldTurns = round % 5;
      const cancel = (async () => {
        for (let i = 0; i < yieldTurns; i++) await Promise.resolve();
        return cancelJob(deps, job.jobId).catch(() => undefined);
      })();
      const committed = await commit(job).then(
        () => true,
        (err: unknown) => (err instanceof ConflictError ? false : Promise.reject(err)),
      );
      await cancel;

      const after = await catalog.getJob(job.jobId);
      const points = await catalog.listPoints();
      expect(points.length, `round ${round}`).toBe(committed ? 1 : 0);
      expect(after?.items?.[0]?.status, `round ${round}`).toBe(
        committed ? 'COMPLETED' : 'CANCELLED',
      );
    }
  });
});
