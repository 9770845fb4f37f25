import { describe, expect, it } from 'vitest';
import { bytesOverTime, jobDurations, lastResults } from '../../../console/src/summary';
import { logLines, stateVisits } from '../../../console/src/history';
import { axisBytes, bytes, duration, fraction } from '../../../console/src/format';
import { parseRoute, href, type Route } from '../../../console/src/route';
import { makeJob, makePoint } from '../../fixtures/factories';

describe('the dashboard summary', () => {
  it("gives each target its newest backup's result, items of selector jobs included", () => {
    const jobs = [
      makeJob({
        jobId: 'job-3',
        target: 'docker:web',
        status: 'FAILED',
        error: { name: 'DriverError', message: 'gone' },
        createdAt: '2026-12-06T03:00:00Z',
      }),
      makeJob({
        jobId: 'job-2',
        target: 'docker:app=shop',
        status: 'PARTIALLY_FAILED',
        createdAt: '2026-12-06T02:00:00Z',
        items: [
          { target: 'docker:web', agent: 'a', recoveryPointId: 'rp-2', status: 'COMPLETED' },
          {
            target: 'docker:api',
            agent: 'a',
            recoveryPointId: 'rp-x',
            status: 'FAILED',
            error: { name: 'E', message: 'hook' },
          },
        ],
      }),
      makeJob({ jobId: 'job-1', kind: 'RESTORE', target: 'docker:db' }),
    ];
    const points = [
      makePoint({
        recoveryPointId: 'rp-2',
        target: 'docker:web',
        createdAt: '2026-12-06T02:00:01Z',
      }),
    ];
    const rows = lastResults(jobs, points, []);
    const web = rows.find((r) => r.target === 'docker:web')!;
    expect(web).toMatchObject({ jobId: 'job-3', status: 'FAILED', error: 'gone' });
    expect(web.point?.recoveryPointId).toBe('rp-2');
    expect(rows.find((r) => r.target === 'docker:api')).toMatchObject({
      jobId: 'job-2',
      status: 'FAILED',
      error: 'hook',
    });
    expect(rows.some((r) => r.target === 'docker:db')).toBe(false);
  });

  it('shows a cancelled backup as CANCELLED, whatever its unfinished item says', () => {
    const job = makeJob({
      target: 'docker:web',
      status: 'CANCELLED',
      items: [{ target: 'docker:web', agent: 'a', recoveryPointId: 'rp-9', status: 'RUNNING' }],
    });
    expect(lastResults([job], [], [])[0]).toMatchObject({
      target: 'docker:web',
      status: 'CANCELLED',
    });
  });

  it("adds up protected bytes from each target's newest point and stored bytes from all", () => {
    const points = [
      makePoint({
        target: 'docker:a',
        createdAt: '2026-12-06T01:00:00Z',
        bytesRead: 100,
        bytesStored: 50,
      }),
      makePoint({
        target: 'docker:b',
        createdAt: '2026-12-06T02:00:00Z',
        bytesRead: 10,
        bytesStored: 10,
      }),
      makePoint({
        target: 'docker:a',
        createdAt: '2026-12-06T03:00:00Z',
        bytesRead: 120,
        bytesStored: 5,
      }),
    ];
    const s = bytesOverTime(points);
    expect(s.ys).toEqual([
      [100, 110, 130],
      [50, 60, 65],
    ]);
    expect(s.x).toEqual(points.map((p) => Date.parse(p.createdAt) / 1000));
  });

  it('plots each finished job in the series of its kind', () => {
    const s = jobDurations([
      makeJob({
        kind: 'RESTORE',
        startedAt: '2026-12-06T01:00:00Z',
        endedAt: '2026-12-06T01:00:30Z',
      }),
      makeJob({
        kind: 'BACKUP',
        startedAt: '2026-12-06T00:00:00Z',
        endedAt: '2026-12-06T00:01:00Z',
      }),
      makeJob({ kind: 'BACKUP', startedAt: '2026-12-06T02:00:00Z' }),
    ]);
    expect(s.ys).toEqual([
      [60, null],
      [null, 30],
    ]);
  });
});

describe('a job history on the job page', () => {
  const events = [
    { id: 1, timestamp: '2026-12-06T00:00:00.000Z', type: 'ExecutionStarted' },
    { id: 2, timestamp: '2026-12-06T00:00:01.000Z', type: 'TaskStateEntered', state: 'Run' },
    { id: 3, timestamp: '2026-12-06T00:00:02.000Z', type: 'TaskStateRetried', state: 'Run' },
    {
      id: 4,
      timestamp: '2026-12-06T00:00:05.000Z',
      type: 'TaskFailed',
      state: 'Run',
      error: 'DriverError',
      cause: 'boom',
    },
    { id: 5, timestamp: '2026-12-06T00:00:06.000Z', type: 'TaskStateExited', state: 'Run' },
    {
      id: 6,
      timestamp: '2026-12-06T00:00:06.000Z',
      type: 'PassStateEntered',
      state: 'Target failed',
    },
  ];

  it('lists the states as Step Functions does: entered, how long, retried, failed', () => {
    expect(stateVisits(events)).toEqual([
      {
        state: 'Run',
        type: 'Task',
        enteredAt: events[1]!.timestamp,
        exitedAt: events[4]!.timestamp,
        seconds: 5,
        retries: 1,
        failed: { error: 'DriverError', cause: 'boom' },
        caught: false,
      },
      {
        state: 'Target failed',
        type: 'Pass',
        enteredAt: events[5]!.timestamp,
        retries: 0,
        caught: false,
      },
    ]);
  });

  it('tells the job as log lines, oldest first, failures as errors', () => {
    const job = makeJob({
      createdAt: '2026-12-05T23:59:59.000Z',
      endedAt: '2026-12-06T00:00:07.000Z',
      status: 'FAILED',
      error: { name: 'DriverError', message: 'boom' },
    });
    const lines = logLines(job, events);
    expect(lines[0]!.text).toMatch(/created/);
    expect(lines.at(-1)!.text).toBe('job ended FAILED');
    expect(lines.filter((l) => l.level === 'error').map((l) => l.text)).toEqual([
      'TaskFailed "Run" DriverError : boom',
      'DriverError: boom',
    ]);
  });

  it("puts its agents' lines among the workflow's events by time, a task's own lines in order", () => {
    const job = makeJob({ createdAt: '2026-12-05T23:59:59.000Z' });
    const agent = (at: string, event: string, text: string, level: 'info' | 'warn' = 'info') => ({
      at,
      level,
      event,
      text,
      agent: 'local',
      target: 'docker:web',
      claimId: 'c1',
    });
    const lines = logLines(job, events.slice(0, 2), [
      agent('2026-12-06T00:00:00.500Z', 'driver.step', 'volume data'),
      agent('2026-12-06T00:00:00.500Z', 'driver.hook', 'exitCode=1', 'warn'),
    ]);
    expect(lines.filter((l) => l.agent).map((l) => [l.level, l.text])).toEqual([
      ['info', 'docker:web (local) driver.step volume data'],
      ['warn', 'docker:web (local) driver.hook exitCode=1'],
    ]);
    expect(lines.map((l) => l.at)).toEqual([...lines.map((l) => l.at)].sort());
  });
});

describe('formats and routes', () => {
  it('writes sizes, durations and fractions a person reads at a glance', () => {
    expect(bytes(0)).toBe('0 B');
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(5 * 1024 ** 3)).toBe('5.0 GiB');
    expect(duration(75)).toBe('1m 15s');
    expect(duration(3725)).toBe('1h 2m');
    expect(fraction(5, 10)).toBe(0.5);
    expect(fraction(5, undefined)).toBeUndefined();
    expect(fraction(20, 10)).toBe(1);
  });

  it('labels a byte axis in one unit with the decimals its step needs', () => {
    const g = 1024 ** 3;
    expect(axisBytes([g, g * 1.002, g * 1.004])).toEqual(['1.000 GiB', '1.002 GiB', '1.004 GiB']);
    expect(axisBytes([0, 512 * 1024 ** 2, g])).toEqual(['0.0 GiB', '0.5 GiB', '1.0 GiB']);
    expect(axisBytes([0, 100, 200])).toEqual(['0 B', '100 B', '200 B']);
  });

  it('reads back every route it writes, targets and ids with any character', () => {
    const routes: Route[] = [
      { page: 'dashboard' },
      { page: 'target', target: 'path:/srv/a b@x' },
      { page: 'restore', point: 'rp-1' },
      { page: 'job', jobId: 'job-1' },
      { page: 'policies' },
      { page: 'plots' },
    ];
    for (const r of routes) expect(parseRoute(href(r))).toEqual(r);
    expect(parseRoute('#token=abc')).toEqual({ page: 'dashboard' });
  });
});
