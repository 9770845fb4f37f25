import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileJobEvents } from '../../../../functions/adapters/job-events';
import { cancelJob } from '../../../../functions/core/cancel';
import {
  jobEvent,
  jobMetrics,
  type JobEvent,
  type JobObservers,
} from '../../../../functions/core/job-events';
import { requestVerify } from '../../../../functions/core/requests/verify';
import { makeRequestDeps } from '../../../fixtures/fake-workflows';
import { emfDocument, Metrics } from '../../../../kernel/metrics';
import { silentLogger } from '../../../../kernel/logger';
import { METRICS } from '../../../../kernel/resources';
import { makeAgent, makeJob, makePoint, T0 } from '../../../fixtures/factories';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const ENDED = '2025-03-01T10:02:00.000Z';

describe('Job State Change events', () => {
  it('carry the job in detail with its duration, as source stowage, about its execution', () => {
    const job = makeJob({
      jobId: 'job-1',
      kind: 'RESTORE',
      status: 'FAILED',
      target: 'docker:web2',
      source: 'docker:web',
      startedAt: T0,
      endedAt: ENDED,
      executionArn: 'arn:aws:states:eu-west-1:1:execution:restore:job-1',
      error: { name: 'NameTaken', message: 'docker:web2 exists' },
    });

    const event = jobEvent(job, ENDED);

    expect(event).toEqual({
      source: 'stowage',
      detailType: 'Job State Change',
      time: ENDED,
      resources: ['arn:aws:states:eu-west-1:1:execution:restore:job-1'],
      detail: {
        jobId: 'job-1',
        kind: 'RESTORE',
        status: 'FAILED',
        target: 'docker:web2',
        source: 'docker:web',
        agent: job.agent,
        recoveryPointId: job.recoveryPointId,
        createdAt: T0,
        startedAt: T0,
        endedAt: ENDED,
        durationMs: 120_000,
        executionArn: 'arn:aws:states:eu-west-1:1:execution:restore:job-1',
        error: { name: 'NameTaken', message: 'docker:web2 exists' },
      },
    });
  });

  it('go to a file in local mode as EventBridge shows them, one line each', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stowage-events-'));
    dirs.push(dir);
    const file = join(dir, 'events.jsonl');
    const events = new FileJobEvents(file, silentLogger);

    await events.put(jobEvent(makeJob({ jobId: 'job-a', status: 'RUNNING' }), T0));
    await events.put(jobEvent(makeJob({ jobId: 'job-a', status: 'SUCCEEDED' }), ENDED));

    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.source, l['detail-type'], l.detail.jobId, l.detail.status])).toEqual(
      [
        ['stowage', 'Job State Change', 'job-a', 'RUNNING'],
        ['stowage', 'Job State Change', 'job-a', 'SUCCEEDED'],
      ],
    );
  });
});

describe('job metrics', () => {
  const names = (job: Parameters<typeof jobMetrics>[0]) =>
    jobMetrics(job).flatMap((m) => m.metrics.map((d) => `${d.name}=${d.value}`));

  it('count a start by kind, and nothing for a pending job', () => {
    expect(jobMetrics(makeJob({ kind: 'VERIFY', status: 'RUNNING' }))).toEqual([
      {
        metrics: [{ name: METRICS.jobsStarted, unit: 'Count', value: 1 }],
        dimensions: { Kind: 'VERIFY' },
        dimensionSets: [['Kind']],
      },
    ]);
    expect(jobMetrics(makeJob({ status: 'PENDING' }))).toEqual([]);
  });

  it('count an end by status and kind, with the duration and a backup’s bytes', () => {
    const job = makeJob({
      status: 'PARTIALLY_FAILED',
      startedAt: T0,
      endedAt: ENDED,
      progress: {
        phase: 'done',
        bytesDone: 1000,
        bytesNew: 400,
        bytesStored: 300,
        rate: 0,
        updatedAt: ENDED,
      },
    });
    expect(names(job)).toEqual([
      'JobsEnded=1',
      'JobDuration=120000',
      'BytesProtected=1000',
      'BytesNew=400',
      'BytesStored=300',
    ]);
    expect(jobMetrics(job)[0]!.dimensionSets).toEqual([['Status'], ['Kind', 'Status']]);
    // A failed backup made no point: its partial progress is not bytes protected.
    expect(names({ ...job, status: 'FAILED' })).toEqual(['JobsEnded=1', 'JobDuration=120000']);
  });

  it('give a restore test’s RTO', () => {
    const job = makeJob({
      kind: 'RESTORE_TEST',
      status: 'SUCCEEDED',
      restoreTest: { passed: true, sandbox: 'lxd:s', rtoMs: 4200, restoreMs: 4000, removed: true },
    });
    expect(names(job)).toContain('RestoreTestRto=4200');
  });
});

describe('EMF lines', () => {
  it('name the metrics and dimensions CloudWatch extracts, at the resolution asked', () => {
    const doc = emfDocument(
      'Stowage',
      [{ name: 'AgentHeartbeats', unit: 'Count', value: 1, resolution: 1 }],
      { Site: 'lab' },
      [['Site']],
      { version: '0.1.0' },
      1_700_000_000_000,
    );
    expect(doc).toEqual({
      version: '0.1.0',
      Site: 'lab',
      AgentHeartbeats: 1,
      _aws: {
        Timestamp: 1_700_000_000_000,
        CloudWatchMetrics: [
          {
            Namespace: 'Stowage',
            Dimensions: [['Site']],
            Metrics: [{ Name: 'AgentHeartbeats', Unit: 'Count', StorageResolution: 1 }],
          },
        ],
      },
    });
    expect(() => emfDocument('Stowage', [], {}, [['Site']])).toThrow(/Site has no value/);
  });

  it('are written one JSON document per publish to the sink', () => {
    const lines: string[] = [];
    const metrics = new Metrics('Stowage', (line) => lines.push(line));
    metrics.publish([{ name: 'JobsEnded', unit: 'Count', value: 1 }], { Status: 'FAILED' });
    metrics.publish([], { Status: 'FAILED' });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ Status: 'FAILED', JobsEnded: 1 });
  });
});

describe('the job state changes the API makes', () => {
  function observed() {
    const events: JobEvent[] = [];
    const lines: string[] = [];
    const observers: JobObservers = {
      events: { put: async (e) => void events.push(e as JobEvent) },
      metrics: new Metrics('Stowage', (line) => lines.push(line)),
    };
    const made = makeRequestDeps();
    made.deps.jobObservers = observers;
    return { ...made, events, lines };
  }

  async function withPoint(catalog: ReturnType<typeof makeRequestDeps>['catalog']) {
    await catalog.putAgent(makeAgent({ agent: 'site-1', targets: ['docker:web'] }));
    await catalog.putPoint(makePoint({ recoveryPointId: 'rp-1', agent: 'site-1' }));
  }

  it('announce a job created PENDING, and its cancel with the JobsEnded metric', async () => {
    const { catalog, deps, events, lines } = observed();
    await withPoint(catalog);
    const { jobId } = await requestVerify(deps, { recoveryPointId: 'rp-1' });
    await catalog.updateJob(jobId, { status: 'RUNNING', startedAt: T0 }, ['PENDING']);

    await cancelJob(deps, jobId);

    expect(events.map((e) => [e.detail.jobId, e.detail.kind, e.detail.status])).toEqual([
      [jobId, 'VERIFY', 'PENDING'],
      [jobId, 'VERIFY', 'CANCELLED'],
    ]);
    expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual([
      expect.objectContaining({ JobsEnded: 1, Status: 'CANCELLED', Kind: 'VERIFY' }),
      expect.objectContaining({ JobDuration: expect.any(Number), Kind: 'VERIFY' }),
    ]);
  });

  it('announce a job whose workflow could not start as FAILED', async () => {
    const { catalog, deps, workflows, events } = observed();
    await withPoint(catalog);
    workflows.failWith = new Error('throttled');

    await expect(requestVerify(deps, { recoveryPointId: 'rp-1' })).rejects.toThrow('throttled');

    expect(events.map((e) => [e.detail.status, e.detail.error?.name])).toEqual([
      ['PENDING', undefined],
      ['FAILED', 'WorkflowNotStarted'],
    ]);
  });
});
