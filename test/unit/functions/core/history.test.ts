import { describe, expect, it } from 'vitest';
import { getJobHistory, type WorkflowEvent } from '../../../../functions/core/history';
import { flatten } from '../../../../functions/adapters/sfn-history';
import { makeJob } from '../../../fixtures/factories';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

const events: WorkflowEvent[] = [
  { id: 1, timestamp: '2026-12-06T10:00:00.000Z', type: 'ExecutionStarted' },
  { id: 2, timestamp: '2026-12-06T10:00:01.000Z', type: 'TaskStateEntered', state: 'Record' },
];

describe('a job history', () => {
  it("answers the events of the job's execution", async () => {
    const catalog = new MemoryCatalog();
    const job = makeJob({ executionArn: 'arn:exec:1' });
    await catalog.createJob(job);
    const asked: string[] = [];
    const history = {
      events: async (arn: string) => {
        asked.push(arn);
        return events;
      },
    };

    const out = await getJobHistory({ catalog, history }, job.jobId);

    expect(asked).toEqual(['arn:exec:1']);
    expect(out).toEqual({ jobId: job.jobId, executionArn: 'arn:exec:1', events });
  });

  it('is empty while the job has no execution', async () => {
    const catalog = new MemoryCatalog();
    const job = makeJob({ status: 'PENDING' });
    delete job.executionArn;
    await catalog.createJob(job);
    const history = { events: async () => events };

    expect(await getJobHistory({ catalog, history }, job.jobId)).toEqual({
      jobId: job.jobId,
      events: [],
    });
  });

  it('is a 404 for an unknown job', async () => {
    await expect(getJobHistory({ catalog: new MemoryCatalog() }, 'job-nope')).rejects.toMatchObject(
      { status: 404 },
    );
  });
});

describe("Step Functions' history events", () => {
  it('are flattened to the state, error and cause their details carry', () => {
    const at = new Date('2026-12-06T10:00:02.000Z');
    expect(
      flatten({
        id: 3,
        timestamp: at,
        type: 'TaskStateEntered',
        stateEnteredEventDetails: { name: 'Run' },
      }),
    ).toEqual({ id: 3, timestamp: at.toISOString(), type: 'TaskStateEntered', state: 'Run' });
    expect(
      flatten({
        id: 4,
        timestamp: at,
        type: 'TaskFailed',
        taskFailedEventDetails: {
          resourceType: 'Task',
          resource: 'Run',
          error: 'DriverError',
          cause: 'boom',
        },
      }),
    ).toEqual({
      id: 4,
      timestamp: at.toISOString(),
      type: 'TaskFailed',
      state: 'Run',
      error: 'DriverError',
      cause: 'boom',
    });
  });
});
