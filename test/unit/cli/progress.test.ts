import { describe, expect, it } from 'vitest';
import { bar, ProgressReporter, progressBarLine } from '../../../cli/progress';
import type { Job, JobProgress } from '../../../kernel/model';
import { makeJob, T0 } from '../../fixtures/factories';

const MiB = 1024 * 1024;

function makeProgress(overrides: Partial<JobProgress> = {}): JobProgress {
  return { phase: 'volume data', bytesDone: 0, rate: 0, updatedAt: T0, ...overrides };
}

function running(progress: Partial<JobProgress>, overrides: Partial<Job> = {}): Job {
  return makeJob({ status: 'RUNNING', progress: makeProgress(progress), ...overrides });
}

/** A sink that records what is written, as a terminal (isTTY) or a pipe. */
function makeSink(isTTY: boolean, columns = 100) {
  const writes: string[] = [];
  return { writes, sink: { isTTY, columns, write: (t: string) => writes.push(t) } };
}

describe('bar', () => {
  it('fills as many cells as the fraction done, never fewer than none or more than all', () => {
    for (let i = -2; i <= 12; i++) {
      const drawn = bar(i / 10, 20);
      const filled = drawn.split('#').length - 1;

      expect(drawn).toHaveLength(22);
      expect(filled).toBe(Math.round(Math.min(1, Math.max(0, i / 10)) * 20));
    }
    expect(bar(Number.NaN, 4)).toBe('[----]');
  });
});

describe('progressBarLine', () => {
  it('shows a bar, the percentage, bytes of the total, the rate, the ETA and the phase when the size is known', () => {
    const job = running({
      bytesDone: 512 * MiB,
      bytesTotal: 2048 * MiB,
      rate: 64 * MiB,
      etaSeconds: 24,
    });

    const line = progressBarLine(job, 120);

    expect(line).toBe(
      `[${'#'.repeat(8)}${'-'.repeat(22)}] 25% 512.0 MiB of 2.0 GiB, 64.0 MiB/s, ETA 24s  volume data`,
    );
  });

  it('shows bytes and rate but no bar and no ETA when the size is not known', () => {
    const line = progressBarLine(running({ bytesDone: 3 * MiB, rate: MiB, etaSeconds: 9 }), 100);

    expect(line).toBe('running: 3.0 MiB, 1.0 MiB/s  volume data');
  });

  it('shows the status (and phase) before anything has been reported', () => {
    expect(progressBarLine(makeJob({ status: 'PENDING' }), 80)).toBe('pending');
  });

  it('never shows an ETA while nothing moves', () => {
    const line = progressBarLine(
      running({ bytesDone: MiB, bytesTotal: 4 * MiB, etaSeconds: 5 }),
      100,
    );

    expect(line).not.toMatch(/ETA/);
    expect(line).toMatch(/ 25% 1\.0 MiB of 4\.0 MiB/);
  });

  it('sums the items of a job of several targets and says how many are done', () => {
    const job = makeJob({
      status: 'RUNNING',
      items: [
        {
          target: 'docker:a',
          agent: 's',
          recoveryPointId: 'rp-a',
          status: 'COMPLETED',
          progress: makeProgress({ phase: 'done', bytesDone: 10 * MiB, bytesTotal: 10 * MiB }),
        },
        {
          target: 'docker:b',
          agent: 's',
          recoveryPointId: 'rp-b',
          status: 'RUNNING',
          progress: makeProgress({
            phase: 'volume b',
            bytesDone: 5 * MiB,
            bytesTotal: 30 * MiB,
            rate: 5 * MiB,
          }),
        },
      ],
    });

    const line = progressBarLine(job, 140);

    expect(
      line.endsWith(
        '] 37% 15.0 MiB of 40.0 MiB, 5.0 MiB/s, ETA 5s  1 of 2 targets done; docker:b: volume b',
      ),
    ).toBe(true);
  });

  it('fits any terminal width without wrapping', () => {
    const job = running({
      phase: 'x'.repeat(300),
      bytesDone: MiB,
      bytesTotal: 2 * MiB,
      rate: MiB,
      etaSeconds: 1,
    });

    for (const columns of [10, 40, 80, 200]) {
      expect(progressBarLine(job, columns).length).toBeLessThanOrEqual(Math.max(20, columns - 1));
    }
  });
});

describe('ProgressReporter', () => {
  it('redraws one line in place on a terminal and ends it with a newline', () => {
    const { writes, sink } = makeSink(true);
    const reporter = new ProgressReporter(sink, 'job-1');

    reporter.update(running({ bytesDone: MiB, bytesTotal: 4 * MiB, rate: MiB, etaSeconds: 3 }));
    reporter.update(running({ bytesDone: MiB, bytesTotal: 4 * MiB, rate: MiB, etaSeconds: 3 }));
    reporter.update(running({ bytesDone: 2 * MiB, bytesTotal: 4 * MiB, rate: MiB, etaSeconds: 2 }));
    reporter.end();

    expect(writes).toHaveLength(3);
    expect(
      writes
        .slice(0, 2)
        .every((w) => w.startsWith('\r') && w.endsWith('\x1b[K') && !w.includes('\n')),
    ).toBe(true);
    expect(writes[2]).toBe('\n');
  });

  it('draws a full line on a terminal that does not say how wide it is', () => {
    const { writes, sink } = makeSink(true, 0);

    new ProgressReporter(sink, 'job-1').update(
      running({ bytesDone: MiB, bytesTotal: 4 * MiB, rate: MiB, etaSeconds: 3 }),
    );

    expect(writes[0]).toContain('25% 1.0 MiB of 4.0 MiB, 1.0 MiB/s, ETA 3s  volume data');
  });

  it('writes plain lines off a terminal: a new phase at once, mere byte counts at most every few seconds', () => {
    const { writes, sink } = makeSink(false);
    let now = 0;
    const reporter = new ProgressReporter(sink, 'job-1', 5000, () => now);

    reporter.update(running({ phase: 'saving image', bytesDone: MiB }));
    now = 1000;
    reporter.update(running({ phase: 'saving image', bytesDone: 2 * MiB }));
    reporter.update(running({ phase: 'volume data', bytesDone: 3 * MiB }));
    now = 7000;
    reporter.update(running({ phase: 'volume data', bytesDone: 4 * MiB }));
    reporter.end();

    expect(writes).toEqual([
      'job-1 running: saving image, 1.0 MiB\n',
      'job-1 running: volume data, 3.0 MiB\n',
      'job-1 running: volume data, 4.0 MiB\n',
    ]);
    expect(writes.join('')).not.toContain('\r');
    expect(writes.join('')).not.toContain('\x1b');
  });
});
