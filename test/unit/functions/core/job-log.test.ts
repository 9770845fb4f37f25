import { describe, expect, it } from 'vitest';
import { getJobLog, MAX_JOB_LOG_LINES } from '../../../../functions/core/job-log';
import type { TaskLogBatch, TaskLogLine } from '../../../../kernel/model';
import { makeJob } from '../../../fixtures/factories';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

const at = (second: number) => new Date(Date.UTC(2026, 11, 6, 12, 0, second)).toISOString();
const line = (second: number, event: string): TaskLogLine => ({
  at: at(second),
  level: 'info',
  event,
  text: '',
});

function makeBatch(overrides: Partial<TaskLogBatch> = {}): TaskLogBatch {
  return { claimId: 'c1', seq: 0, agent: 'site-a', target: 'docker:web', lines: [], ...overrides };
}

async function catalogWith(batches: TaskLogBatch[]) {
  const catalog = new MemoryCatalog();
  const job = makeJob();
  await catalog.createJob(job);
  for (const claimId of new Set(batches.map((b) => b.claimId))) {
    await catalog.putRunToken({ site: 'site-a', jobId: job.jobId, claimId }, 'token');
  }
  for (const b of batches) {
    await catalog.appendTaskLog({ site: 'site-a', jobId: job.jobId, claimId: b.claimId }, b);
  }
  return { catalog, jobId: job.jobId };
}

describe("a job's agent log", () => {
  it('merges its tasks by time, each task in the order its agent logged, and says who logged each line', async () => {
    const { catalog, jobId } = await catalogWith([
      // Written out of order: batches are read by seq.
      makeBatch({ claimId: 'zz', seq: 1, target: 'docker:db', lines: [line(5, 'db.3')] }),
      makeBatch({
        claimId: 'zz',
        seq: 0,
        target: 'docker:db',
        lines: [line(1, 'db.1'), line(3, 'db.2')],
      }),
      // Same second as db.2: the task that began logging first comes first.
      makeBatch({
        claimId: 'aa',
        seq: 0,
        lines: [line(2, 'web.1'), line(3, 'web.2'), line(6, 'web.3')],
      }),
    ]);

    const log = await getJobLog(catalog, jobId);

    expect(log.lines.map((l) => l.event)).toEqual([
      'db.1',
      'web.1',
      'db.2',
      'web.2',
      'db.3',
      'web.3',
    ]);
    expect(log.lines[0]).toEqual({
      ...line(1, 'db.1'),
      agent: 'site-a',
      target: 'docker:db',
      claimId: 'zz',
    });
    expect(log).toMatchObject({ jobId, dropped: 0, omitted: 0 });
  });

  it('keeps a task its own order when its clock stepped back', async () => {
    const { catalog, jobId } = await catalogWith([
      makeBatch({ lines: [line(9, 'first'), line(4, 'second')] }),
    ]);
    expect((await getJobLog(catalog, jobId)).lines.map((l) => l.event)).toEqual([
      'first',
      'second',
    ]);
  });

  it('counts the lines each task dropped past its cap', async () => {
    const { catalog, jobId } = await catalogWith([
      makeBatch({ claimId: 'a', seq: 0, lines: [line(1, 'x')], dropped: 3 }),
      makeBatch({ claimId: 'a', seq: 1, lines: [], dropped: 7 }),
      makeBatch({ claimId: 'b', seq: 0, lines: [line(2, 'y')], dropped: 2 }),
    ]);
    expect(await getJobLog(catalog, jobId)).toMatchObject({ dropped: 9, omitted: 0 });
  });

  it(`answers with the newest ${MAX_JOB_LOG_LINES} lines and says how many older ones it left out`, async () => {
    const batches = Array.from({ length: 60 }, (_, seq) =>
      makeBatch({
        seq,
        lines: Array.from({ length: 100 }, (_, i) => ({
          ...line(0, `line ${seq * 100 + i}`),
          at: new Date(Date.UTC(2026, 11, 6) + seq * 100 + i).toISOString(),
        })),
      }),
    );
    const { catalog, jobId } = await catalogWith(batches);

    const log = await getJobLog(catalog, jobId);

    expect(log.omitted).toBe(6000 - MAX_JOB_LOG_LINES);
    expect(log.lines).toHaveLength(MAX_JOB_LOG_LINES);
    expect(log.lines.at(-1)!.event).toBe('line 5999');
  });

  it('is empty for a job whose agents logged nothing yet, and a 404 for an unknown job', async () => {
    const { catalog, jobId } = await catalogWith([]);
    expect(await getJobLog(catalog, jobId)).toEqual({ jobId, lines: [], dropped: 0, omitted: 0 });
    await expect(getJobLog(catalog, 'job-nope')).rejects.toMatchObject({ status: 404 });
  });
});
