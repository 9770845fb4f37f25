import { beforeEach, describe, expect, it } from 'vitest';
import {
  commitRecoveryPoint,
  endBackupJob,
  errorFromStates,
  handOverRunToken,
  markJobFailed,
  markJobStarted,
  markRestoreSucceeded,
} from '../../../../functions/core/jobs';
import type { Job } from '../../../../kernel/model';
import { ConflictError, NotFoundError, ValidationError } from '../../../../kernel/errors';
import {
  TERMINAL_STATUSES,
  type BackupResult,
  type JobStatus,
  type RestoreResult,
} from '../../../../statemachines/contracts';
import { makeBackupResult, makeClock, makeJob, makePoint, T0 } from '../../../fixtures/factories';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

const ARN = 'arn:aws:states:eu-west-1:123456789012:execution:stowage-backup:job-1';

function makeRestoreResult(overrides: Partial<RestoreResult> = {}): RestoreResult {
  return {
    restoredTarget: 'docker:web-restored',
    startedAt: T0,
    completedAt: '2025-03-01T10:03:00.000Z',
    bytesWritten: 123_456,
    ...overrides,
  };
}

let catalog: MemoryCatalog;
let clock: ReturnType<typeof makeClock>;
let deps: { catalog: MemoryCatalog; clock: ReturnType<typeof makeClock> };

beforeEach(() => {
  catalog = new MemoryCatalog();
  clock = makeClock();
  deps = { catalog, clock };
});

async function given(overrides: Partial<Job> = {}): Promise<Job> {
  const job = makeJob(overrides);
  await catalog.createJob(job);
  return job;
}

function commitInput(job: Job, result: BackupResult, itemIndex = 0) {
  return {
    jobId: job.jobId,
    itemIndex,
    recoveryPointId: job.items?.[itemIndex]?.recoveryPointId ?? job.recoveryPointId!,
    target: job.target,
    agent: job.agent,
    result,
  };
}

describe('handOverRunToken', () => {
  it('stores the run token under the claim for the claiming agent to take once', async () => {
    const job = await given({ status: 'RUNNING' });
    const claim = { site: 'site-1', jobId: job.jobId, claimId: 'claim-12345' };
    await handOverRunToken(deps, { ...claim, agent: 'site-1', taskToken: 'run' });
    expect(await catalog.takeRunToken({ ...claim, site: 'site-2' })).toBeUndefined();
    expect(await catalog.takeRunToken(claim)).toBe('run');
    expect(await catalog.takeRunToken(claim)).toBeUndefined();
  });

  for (const status of TERMINAL_STATUSES) {
    it(`hands no token to a task of a ${status} job, so it never runs`, async () => {
      const job = await given({ status });
      await expect(
        handOverRunToken(deps, {
          jobId: job.jobId,
          claimId: 'claim-12345',
          agent: 'site-1',
          taskToken: 'run',
        }),
      ).rejects.toBeInstanceOf(ConflictError);
      expect(
        await catalog.takeRunToken({ site: 'site-1', jobId: job.jobId, claimId: 'claim-12345' }),
      ).toBeUndefined();
    });
  }

  it('refuses a claim id or a site that is not one (the agent wrote them)', async () => {
    const job = await given({ status: 'RUNNING' });
    for (const claimId of ['', 'short', 'a/b/c/d/e/f', 'x'.repeat(129)]) {
      await expect(
        handOverRunToken(deps, { jobId: job.jobId, claimId, agent: 'site-1', taskToken: 'run' }),
      ).rejects.toBeInstanceOf(ValidationError);
    }
    // A site name with # or / could reach another site's keys.
    for (const agent of ['', 'a#b', 'a/b', 'site-1#JOB#x', 'x'.repeat(65)]) {
      await expect(
        handOverRunToken(deps, {
          jobId: job.jobId,
          claimId: 'claim-12345',
          agent,
          taskToken: 'run',
        }),
      ).rejects.toBeInstanceOf(ValidationError);
    }
  });
});

describe('markJobStarted', () => {
  it('moves a PENDING job to RUNNING with the start time and the execution', async () => {
    const job = await given({ status: 'PENDING' });
    clock.advance(2_000);

    const started = await markJobStarted(deps, job.jobId, ARN);

    expect(started).toEqual({
      ...job,
      status: 'RUNNING',
      startedAt: '2025-03-01T10:00:02.000Z',
      executionArn: ARN,
    });
    expect(await catalog.getJob(job.jobId)).toEqual(started);
  });

  it('leaves the job as the first call left it when called twice', async () => {
    const job = await given({ status: 'PENDING' });
    const first = await markJobStarted(deps, job.jobId, ARN);
    clock.advance(60_000);

    const second = await markJobStarted(deps, job.jobId, `${ARN}-retry`);

    expect(second).toEqual(first);
    expect(await catalog.getJob(job.jobId)).toEqual(first);
  });

  it('fails with NotFoundError for a job the catalog does not have', async () => {
    await expect(markJobStarted(deps, 'job-missing', ARN)).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('markRestoreSucceeded', () => {
  it.each<JobStatus>(['PENDING', 'RUNNING'])(
    'marks a %s restore SUCCEEDED with its end time and the bytes written',
    async (status) => {
      const job = await given({ kind: 'RESTORE', status });
      clock.advance(180_000);

      const done = await markRestoreSucceeded(deps, job.jobId, makeRestoreResult());

      expect(done).toEqual({
        ...job,
        status: 'SUCCEEDED',
        endedAt: '2025-03-01T10:03:00.000Z',
        progress: {
          phase: 'done',
          bytesDone: 123_456,
          rate: 0,
          updatedAt: '2025-03-01T10:03:00.000Z',
        },
      });
    },
  );

  it('leaves the job as the first call left it when called twice', async () => {
    const job = await given({ kind: 'RESTORE', status: 'RUNNING' });
    const first = await markRestoreSucceeded(deps, job.jobId, makeRestoreResult());
    clock.advance(5_000);

    const second = await markRestoreSucceeded(
      deps,
      job.jobId,
      makeRestoreResult({ bytesWritten: 1 }),
    );

    expect(second).toEqual(first);
  });

  it('fails with NotFoundError for a job the catalog does not have', async () => {
    await expect(
      markRestoreSucceeded(deps, 'job-missing', makeRestoreResult()),
    ).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('markJobFailed', () => {
  it.each<JobStatus>(['PENDING', 'RUNNING'])(
    'marks a %s job FAILED with the error and its end time',
    async (status) => {
      const job = await given({ status });
      const error = { name: 'DriverError', message: 'docker refused: no space left on device' };

      const failed = await markJobFailed(deps, job.jobId, error);

      expect(failed).toEqual({ ...job, status: 'FAILED', endedAt: T0, error });
    },
  );

  it('keeps the first error when called twice', async () => {
    const job = await given({ status: 'RUNNING' });
    const first = await markJobFailed(deps, job.jobId, { name: 'States.Timeout', message: 'a' });
    clock.advance(1_000);

    const second = await markJobFailed(deps, job.jobId, { name: 'Other', message: 'b' });

    expect(second).toEqual(first);
    expect(second.error).toEqual({ name: 'States.Timeout', message: 'a' });
  });

  it('fails with NotFoundError for a job the catalog does not have', async () => {
    await expect(
      markJobFailed(deps, 'job-missing', { name: 'X', message: 'y' }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('a job in a terminal state is never moved again', () => {
  const transitions: Array<[string, (job: Job) => Promise<unknown>]> = [
    ['start', (job) => markJobStarted(deps, job.jobId, ARN)],
    ['restore success', (job) => markRestoreSucceeded(deps, job.jobId, makeRestoreResult())],
    ['failure', (job) => markJobFailed(deps, job.jobId, { name: 'Late', message: 'late' })],
    [
      'commit',
      (job) =>
        commitRecoveryPoint(
          deps,
          commitInput(job, makeBackupResult({ recoveryPointId: job.recoveryPointId! })),
        ),
    ],
  ];
  const cases = TERMINAL_STATUSES.flatMap((status) =>
    transitions.map(([name, run]) => [status, name, run] as const),
  );

  it.each(cases)('a %s job stays as it is when a %s comes late', async (status, name, run) => {
    const job = await given({
      status,
      startedAt: T0,
      endedAt: T0,
      ...(status === 'FAILED'
        ? { error: { name: 'States.HeartbeatTimeout', message: 'gone' } }
        : {}),
    });
    clock.advance(3_600_000);

    // A late commit of an item that did not complete is refused outright, and so is a late
    // start (the workflow of a job cancelled before it started must not go on).
    const late = run(job);
    if (name === 'commit' || name === 'start') {
      await expect(late).rejects.toBeInstanceOf(ConflictError);
      expect(await catalog.getPoint(job.recoveryPointId!)).toBeUndefined();
    } else {
      await late;
    }

    expect(await catalog.getJob(job.jobId)).toEqual(job);
  });

  it('a RUNNING job is not started again', async () => {
    const job = await given({ status: 'RUNNING', startedAt: T0, executionArn: ARN });
    clock.advance(1_000);

    const again = await markJobStarted(deps, job.jobId, `${ARN}-other`);

    expect(again).toEqual(job);
  });
});

describe('commitRecoveryPoint', () => {
  it('writes a COMPLETED point with the durations and sizes of the result', async () => {
    const job = await given({ status: 'RUNNING', target: 'docker:web', agent: 'site-1' });
    const result = makeBackupResult({ recoveryPointId: job.recoveryPointId! });

    const output = await commitRecoveryPoint(deps, commitInput(job, result));

    expect(output).toEqual({ recoveryPointId: job.recoveryPointId!, status: 'COMPLETED' });
    expect(await catalog.getPoint(job.recoveryPointId!)).toEqual({
      recoveryPointId: job.recoveryPointId!,
      target: 'docker:web',
      platform: 'docker',
      agent: 'site-1',
      jobId: job.jobId,
      status: 'COMPLETED',
      createdAt: result.startedAt,
      completedAt: result.completedAt,
      durationMs: 125_250,
      bytesRead: result.bytesRead,
      bytesNew: result.bytesNew,
      bytesStored: result.bytesStored,
      streams: result.streams,
      manifestKey: result.manifestKey,
      summary: result.summary,
    });
  });

  it('marks its item COMPLETED with the bytes read, new and stored, and leaves the job RUNNING for the end of the Map', async () => {
    const job = await given({ status: 'RUNNING' });
    const result = makeBackupResult({ recoveryPointId: job.recoveryPointId!, bytesRead: 777 });
    clock.advance(130_000);

    await commitRecoveryPoint(deps, commitInput(job, result));

    expect(await catalog.getJob(job.jobId)).toEqual({
      ...job,
      items: [
        {
          ...job.items![0]!,
          status: 'COMPLETED',
          progress: {
            phase: 'done',
            bytesDone: 777,
            bytesNew: result.bytesNew,
            bytesStored: result.bytesStored,
            rate: 0,
            updatedAt: '2025-03-01T10:02:10.000Z',
          },
        },
      ],
    });
  });

  it('records the duration as completedAt minus startedAt over a range of durations', async () => {
    const durations = [0, 1, 999, 1_000, 59_999, 3_600_000, 86_400_000 + 1, 7 * 86_400_000];
    for (const durationMs of durations) {
      const job = await given({ status: 'RUNNING' });
      const startedAt = new Date(Date.parse(T0) + durationMs * 3).toISOString();
      const completedAt = new Date(Date.parse(startedAt) + durationMs).toISOString();
      const result = makeBackupResult({
        recoveryPointId: job.recoveryPointId!,
        startedAt,
        completedAt,
      });

      await commitRecoveryPoint(deps, commitInput(job, result));

      const point = await catalog.getPoint(job.recoveryPointId!);
      expect(point?.durationMs, `${durationMs} ms`).toBe(durationMs);
      expect(point?.createdAt).toBe(startedAt);
    }
  });

  it('takes the platform from the target for every platform', async () => {
    for (const target of ['docker-compose:stack', 'lxd-volume:default/data', 'vsphere:DC0/vm/a']) {
      const job = await given({ status: 'RUNNING', target });

      await commitRecoveryPoint(
        deps,
        commitInput(job, makeBackupResult({ recoveryPointId: job.recoveryPointId! })),
      );

      expect((await catalog.getPoint(job.recoveryPointId!))?.platform).toBe(target.split(':')[0]);
    }
  });

  it('leaves the same point and job when called twice', async () => {
    const job = await given({ status: 'RUNNING' });
    const input = commitInput(job, makeBackupResult({ recoveryPointId: job.recoveryPointId! }));
    await commitRecoveryPoint(deps, input);
    const pointAfterFirst = await catalog.getPoint(job.recoveryPointId!);
    const jobAfterFirst = await catalog.getJob(job.jobId);
    clock.advance(10_000);

    const again = await commitRecoveryPoint(deps, input);

    expect(again).toEqual({ recoveryPointId: job.recoveryPointId!, status: 'COMPLETED' });
    expect(await catalog.getPoint(job.recoveryPointId!)).toEqual(pointAfterFirst);
    expect(await catalog.getJob(job.jobId)).toEqual(jobAfterFirst);
    expect(await catalog.listPoints()).toHaveLength(1);
  });

  it('completes the item on a retry when the first call wrote the point but not the item', async () => {
    const job = await given({ status: 'RUNNING' });
    const input = commitInput(job, makeBackupResult({ recoveryPointId: job.recoveryPointId! }));
    const updateJobItem = catalog.updateJobItem.bind(catalog);
    catalog.updateJobItem = async () => {
      throw new Error('connection reset');
    };
    await expect(commitRecoveryPoint(deps, input)).rejects.toThrow('connection reset');
    catalog.updateJobItem = updateJobItem;

    await commitRecoveryPoint(deps, input);

    expect((await catalog.getJob(job.jobId))?.items?.[0]?.status).toBe('COMPLETED');
    expect((await catalog.getPoint(job.recoveryPointId!))?.jobId).toBe(job.jobId);
  });

  it('rejects a result for another point, and writes nothing', async () => {
    const job = await given({ status: 'RUNNING', recoveryPointId: 'rp-expected' });
    const result = makeBackupResult({ recoveryPointId: 'rp-other' });

    const commit = commitRecoveryPoint(deps, commitInput(job, result));

    await expect(commit).rejects.toThrow(
      `agent reported point rp-other for job ${job.jobId}, expected rp-expected`,
    );
    expect(await catalog.listPoints()).toEqual([]);
    expect(await catalog.getJob(job.jobId)).toEqual(job);
  });

  it('refuses with ConflictError to overwrite a point another job wrote, and leaves the job', async () => {
    const job = await given({ status: 'RUNNING' });
    const theirs = makePoint({ recoveryPointId: job.recoveryPointId!, jobId: 'job-someone-else' });
    await catalog.putPoint(theirs);

    const commit = commitRecoveryPoint(
      deps,
      commitInput(job, makeBackupResult({ recoveryPointId: job.recoveryPointId! })),
    );

    await expect(commit).rejects.toBeInstanceOf(ConflictError);
    expect(await catalog.getPoint(job.recoveryPointId!)).toEqual(theirs);
    expect(await catalog.getJob(job.jobId)).toEqual(job);
  });

  it('commits the backup of a target whose name contains an @', async () => {
    const job = await given({ status: 'RUNNING', target: 'path:/home/ann@corp/docs' });
    const result = makeBackupResult({ recoveryPointId: job.recoveryPointId! });

    await commitRecoveryPoint(deps, commitInput(job, result));

    expect(await catalog.getPoint(job.recoveryPointId!)).toMatchObject({
      target: 'path:/home/ann@corp/docs',
      platform: 'path',
    });
  });
});

describe('endBackupJob', () => {
  const item = (name: string) => ({
    target: `docker:${name}`,
    agent: 'site-1',
    recoveryPointId: `rp-${name}`,
    status: 'PENDING' as const,
  });

  /** A RUNNING job of `names`, whose items `completed` were committed with `bytes` read each. */
  async function runningJobOf(names: string[], completed: number[], bytes = 1000) {
    const job = await given({
      status: 'RUNNING',
      target: 'docker:app=x',
      items: names.map(item),
    });
    for (const index of completed) {
      const result = makeBackupResult({
        recoveryPointId: `rp-${names[index]}`,
        bytesRead: bytes,
        bytesNew: bytes / 2,
        bytesStored: bytes / 4,
      });
      await commitRecoveryPoint(deps, {
        ...commitInput(job, result, index),
        target: `docker:${names[index]}`,
      });
    }
    return job;
  }

  const agentFailure = (message: string) => ({
    Error: 'DriverError',
    Cause: message,
  });

  it('ends SUCCEEDED when every item completed, with the summed bytes as final progress', async () => {
    const job = await runningJobOf(['a', 'b', 'c'], [0, 1, 2]);
    clock.advance(5_000);

    const ended = await endBackupJob(deps, job.jobId, [
      { index: 0, status: 'COMPLETED', recoveryPointId: 'rp-a' },
      { index: 1, status: 'COMPLETED', recoveryPointId: 'rp-b' },
      { index: 2, status: 'COMPLETED', recoveryPointId: 'rp-c' },
    ]);

    expect(ended.status).toBe('SUCCEEDED');
    expect(ended.error).toBeUndefined();
    expect(ended.endedAt).toBe(clock.now());
    expect(ended.items?.map((i) => i.status)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED']);
    expect(ended.progress).toMatchObject({ phase: 'done', bytesDone: 3000, bytesNew: 1500 });
    expect(await catalog.listPoints()).toHaveLength(3);
  });

  it('ends PARTIALLY_FAILED when a point lacks parts that failed (a vApp child): the point lists them, its item says so', async () => {
    const job = await given({ status: 'RUNNING', target: 'vapp:DC0/vapp/shop', items: [] });
    const withItem = (await catalog.updateJob(
      job.jobId,
      {
        items: [
          {
            target: 'vapp:DC0/vapp/shop',
            agent: 'site-1',
            recoveryPointId: 'rp-shop',
            status: 'PENDING',
          },
        ],
      },
      ['RUNNING'],
    ))!;
    const failures = [
      { part: 'vm db', error: { name: 'DriverError', message: 'db-flat.vmdk does not exist' } },
    ];
    const result = { ...makeBackupResult({ recoveryPointId: 'rp-shop' }), failures };
    await commitRecoveryPoint(deps, {
      ...commitInput(withItem, result, 0),
      target: 'vapp:DC0/vapp/shop',
    });

    const ended = await endBackupJob(deps, job.jobId, [
      { index: 0, status: 'COMPLETED', recoveryPointId: 'rp-shop' },
    ]);

    expect(ended.status).toBe('PARTIALLY_FAILED');
    expect(ended.items?.[0]?.status).toBe('COMPLETED');
    expect(ended.error).toEqual({
      name: 'PartiallyBackedUp',
      message:
        'the point lacks 1 part that failed: vm db: DriverError: db-flat.vmdk does not exist',
    });
    expect(await catalog.getPoint('rp-shop')).toMatchObject({ status: 'COMPLETED', failures });
  });

  it('ends PARTIALLY_FAILED when one item failed: its error on it, the other points kept', async () => {
    const job = await runningJobOf(['a', 'b'], [0]);

    const ended = await endBackupJob(deps, job.jobId, [
      { index: 0, status: 'COMPLETED', recoveryPointId: 'rp-a' },
      { index: 1, status: 'FAILED', error: agentFailure('pre-hook exited 1') },
    ]);

    expect(ended.status).toBe('PARTIALLY_FAILED');
    expect(ended.items?.[0]).toMatchObject({ status: 'COMPLETED', recoveryPointId: 'rp-a' });
    expect(ended.items?.[1]).toMatchObject({
      status: 'FAILED',
      error: { name: 'DriverError', message: 'pre-hook exited 1' },
    });
    expect(ended.error).toEqual({
      name: 'DriverError',
      message: '1 of 2 targets failed: docker:b: pre-hook exited 1',
    });
    expect(ended.progress?.bytesDone).toBe(1000);
    expect((await catalog.getPoint('rp-a'))?.status).toBe('COMPLETED');
    expect(await catalog.getPoint('rp-b')).toBeUndefined();
  });

  it('ends FAILED when every item failed, naming each target', async () => {
    const job = await runningJobOf(['a', 'b'], []);

    const ended = await endBackupJob(deps, job.jobId, [
      { index: 0, status: 'FAILED', error: agentFailure('gone') },
      { index: 1, status: 'FAILED', error: { Error: 'States.HeartbeatTimeout' } },
    ]);

    expect(ended.status).toBe('FAILED');
    expect(ended.error?.name).toBe('DriverError');
    expect(ended.error?.message).toBe(
      '2 of 2 targets failed: docker:a: gone; docker:b: the agent stopped reporting (no heartbeat in time)',
    );
    expect(await catalog.listPoints()).toEqual([]);
  });

  it("gives a one-target job that failed its item's own error, as before there were items", async () => {
    const job = await runningJobOf(['web'], []);

    const ended = await endBackupJob(deps, job.jobId, [
      { index: 0, status: 'FAILED', error: { Error: 'TargetNotFound', Cause: 'web vanished' } },
    ]);

    expect(ended.status).toBe('FAILED');
    expect(ended.error).toEqual({ name: 'TargetNotFound', message: 'web vanished' });
  });

  it('ends with the outcome of every mix of successes and failures over 1 to 4 items', async () => {
    for (let n = 1; n <= 4; n++) {
      for (let mask = 0; mask < 1 << n; mask++) {
        const names = Array.from({ length: n }, (_, i) => `m${n}-${mask}-${i}`);
        const ok = names.map((_, i) => (mask & (1 << i)) !== 0);
        const job = await runningJobOf(
          names,
          ok.flatMap((good, i) => (good ? [i] : [])),
        );

        const ended = await endBackupJob(
          deps,
          job.jobId,
          names.map((name, index) =>
            ok[index]
              ? { index, status: 'COMPLETED' as const, recoveryPointId: `rp-${name}` }
              : { index, status: 'FAILED' as const, error: agentFailure('x') },
          ),
        );

        const good = ok.filter(Boolean).length;
        const expected = good === n ? 'SUCCEEDED' : good === 0 ? 'FAILED' : 'PARTIALLY_FAILED';
        expect(ended.status, `${n} items, mask ${mask}`).toBe(expected);
        expect(ended.items?.filter((i) => i.status === 'COMPLETED')).toHaveLength(good);
      }
    }
  });

  it('counts an item the outcomes leave out as failed rather than succeeded', async () => {
    const job = await runningJobOf(['a', 'b'], [0]);

    const ended = await endBackupJob(deps, job.jobId, [
      { index: 0, status: 'COMPLETED', recoveryPointId: 'rp-a' },
    ]);

    expect(ended.status).toBe('PARTIALLY_FAILED');
    expect(ended.items?.[1]?.error?.name).toBe('InternalError');
  });

  it('fails a job that has no items rather than calling it a success', async () => {
    const job = await given({ status: 'RUNNING', items: [] });

    const ended = await endBackupJob(deps, job.jobId, []);

    expect(ended.status).toBe('FAILED');
    expect(ended.error?.name).toBe('InternalError');
  });

  it("keeps the agent's last progress of a job that made no point", async () => {
    const progress = { phase: 'volume data', bytesDone: 5, rate: 1, updatedAt: T0 };
    const job = await given({ status: 'RUNNING', progress });

    const ended = await endBackupJob(deps, job.jobId, [
      { index: 0, status: 'FAILED', error: agentFailure('disk full') },
    ]);

    expect(ended.status).toBe('FAILED');
    expect(ended.progress).toEqual(progress);
  });

  it('leaves a job that already ended as it is (a retried task)', async () => {
    const job = await runningJobOf(['a', 'b'], [0]);
    const outcomes = [
      { index: 0, status: 'COMPLETED' as const, recoveryPointId: 'rp-a' },
      { index: 1, status: 'FAILED' as const, error: agentFailure('x') },
    ];
    const first = await endBackupJob(deps, job.jobId, outcomes);
    clock.advance(60_000);

    const again = await endBackupJob(deps, job.jobId, outcomes);

    expect(again).toEqual(first);
  });
});

describe('errorFromStates', () => {
  it("unwraps a Lambda's JSON Cause to its errorMessage and keeps Error as the name", () => {
    const cause = JSON.stringify({
      errorType: 'ConflictError',
      errorMessage: 'recovery point rp-1 belongs to another job',
      trace: ['at putPoint'],
    });

    const record = errorFromStates({ Error: 'ConflictError', Cause: cause });

    expect(record).toEqual({
      name: 'ConflictError',
      message: 'recovery point rp-1 belongs to another job',
    });
  });

  it("keeps an agent's plain cause as the message", () => {
    const record = errorFromStates({
      Error: 'NameTaken',
      Cause: 'docker:web already exists; use --in-place to replace it',
    });

    expect(record).toEqual({
      name: 'NameTaken',
      message: 'docker:web already exists; use --in-place to replace it',
    });
  });

  it.each(['{"errorType":"X"}', '42', 'null', '"quoted"', '[1,2]', '{not json'])(
    'keeps a cause that is not a Lambda error document as it is: %s',
    (cause) => {
      expect(errorFromStates({ Error: 'DriverError', Cause: cause })).toEqual({
        name: 'DriverError',
        message: cause,
      });
    },
  );

  it('words a heartbeat timeout for people', () => {
    expect(errorFromStates({ Error: 'States.HeartbeatTimeout' })).toEqual({
      name: 'States.HeartbeatTimeout',
      message: 'the agent stopped reporting (no heartbeat in time)',
    });
    expect(errorFromStates({ Error: 'States.HeartbeatTimeout', Cause: 'site-1 lost' })).toEqual({
      name: 'States.HeartbeatTimeout',
      message: 'the agent stopped reporting (no heartbeat in time): site-1 lost',
    });
  });

  it('words a task timeout for people', () => {
    expect(errorFromStates({ Error: 'States.Timeout', Cause: '' })).toEqual({
      name: 'States.Timeout',
      message: 'the task did not finish in time',
    });
    expect(
      errorFromStates({
        Error: 'States.Timeout',
        Cause: JSON.stringify({ errorType: 'Error', errorMessage: 'Task timed out after 30 s' }),
      }),
    ).toEqual({
      name: 'States.Timeout',
      message: 'the task did not finish in time: Task timed out after 30 s',
    });
  });

  it('falls back to the error name when there is no cause', () => {
    expect(errorFromStates({ Error: 'States.TaskFailed' })).toEqual({
      name: 'States.TaskFailed',
      message: 'States.TaskFailed',
    });
  });
});
