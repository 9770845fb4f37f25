import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ProgressReporter, type ProgressWrite } from '../../../../agents/core/progress';
import type { JobProgress } from '../../../../kernel/model';
import { T0 } from '../../../fixtures/factories';

/** A ProgressWrite that records what it was given; `failing` makes the next calls reject. */
function makeWrite() {
  const writes: JobProgress[] = [];
  let failures = 0;
  const write: ProgressWrite = async (progress) => {
    writes.push(progress);
    if (failures > 0) {
      failures--;
      throw new Error('catalog unavailable');
    }
  };
  return {
    write,
    writes,
    failNext(n: number) {
      failures = n;
    },
  };
}

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(new Date(T0));
});

afterEach(() => {
  vi.useRealTimers();
});

describe('ProgressReporter', () => {
  it('writes once when started, then once per interval', async () => {
    const { write, writes } = makeWrite();
    const reporter = new ProgressReporter(write, 1000);

    reporter.start();
    await vi.advanceTimersByTimeAsync(0);
    const atStart = writes.length;
    await vi.advanceTimersByTimeAsync(3000);
    await reporter.stop();

    expect(atStart).toBe(1);
    expect(writes).toHaveLength(4);
  });

  it.each([
    [20, 1000],
    [100, 950],
    [250, 10_000],
    [1000, 4_500],
  ])(
    'writes at most once per %i ms interval however many bytes arrive, over %i ms',
    async (interval, elapsed) => {
      const { write, writes } = makeWrite();
      const reporter = new ProgressReporter(write, interval);

      reporter.start();
      for (let t = 0; t < elapsed; t += 5) {
        for (let i = 0; i < 10; i++) reporter.addBytes(4096);
        await vi.advanceTimersByTimeAsync(5);
      }
      await reporter.stop();

      expect(writes.length).toBeLessThanOrEqual(1 + Math.floor(elapsed / interval));
      expect(writes.length).toBeGreaterThanOrEqual(Math.floor(elapsed / interval));
    },
  );

  it('carries the phase and the bytes done so far', async () => {
    const { write, writes } = makeWrite();
    const reporter = new ProgressReporter(write, 1000);
    reporter.start();

    reporter.setPhase('saving image');
    reporter.addBytes(1500);
    reporter.addBytes(500);
    await vi.advanceTimersByTimeAsync(1000);
    await reporter.stop();

    expect(writes.at(-1)).toEqual({
      phase: 'saving image',
      bytesDone: 2000,
      rate: 2000,
      updatedAt: '2025-03-01T10:00:01.000Z',
    });
    expect(reporter.total).toBe(2000);
  });

  it('starts in the phase "starting" with nothing done', async () => {
    const { write, writes } = makeWrite();
    const reporter = new ProgressReporter(write, 1000);

    reporter.start();
    await reporter.stop();

    expect(writes).toEqual([{ phase: 'starting', bytesDone: 0, rate: 0, updatedAt: T0 }]);
  });

  it('writes a phase change at once, without waiting for the interval', async () => {
    const { write, writes } = makeWrite();
    const reporter = new ProgressReporter(write, 60_000);
    reporter.start();

    reporter.setPhase('volume data');
    await vi.advanceTimersByTimeAsync(0);

    expect(writes.map((w) => w.phase)).toEqual(['starting', 'volume data']);
    await reporter.stop();
  });

  it('measures the rate over the last interval', async () => {
    const { write, writes } = makeWrite();
    const reporter = new ProgressReporter(write, 1000);
    reporter.start();

    reporter.addBytes(10_000);
    await vi.advanceTimersByTimeAsync(1000);
    reporter.addBytes(3_000);
    await vi.advanceTimersByTimeAsync(1000);
    await vi.advanceTimersByTimeAsync(1000);
    await reporter.stop();

    expect(writes.map((w) => [w.bytesDone, w.rate])).toEqual([
      [0, 0],
      [10_000, 10_000],
      [13_000, 3_000],
      [13_000, 0],
    ]);
  });

  it('does not throw when a write fails, and writes again at the next interval', async () => {
    const { write, writes, failNext } = makeWrite();
    const reporter = new ProgressReporter(write, 1000);
    failNext(2);

    reporter.start();
    reporter.addBytes(100);
    await vi.advanceTimersByTimeAsync(1000);
    reporter.addBytes(100);
    await vi.advanceTimersByTimeAsync(1000);
    const stopped = reporter.stop();

    await expect(stopped).resolves.toBeUndefined();
    expect(writes.map((w) => w.bytesDone)).toEqual([0, 100, 200]);
  });

  it('never runs two writes at once, even when a write outlasts the interval', async () => {
    let running = 0;
    let most = 0;
    let calls = 0;
    const write: ProgressWrite = async () => {
      calls++;
      running++;
      most = Math.max(most, running);
      await new Promise((resolve) => setTimeout(resolve, 2500));
      running--;
    };
    const reporter = new ProgressReporter(write, 1000);

    reporter.start();
    await vi.advanceTimersByTimeAsync(5000);
    const stopped = reporter.stop();
    await vi.runAllTimersAsync();
    await stopped;

    expect(most).toBe(1);
    expect(calls).toBe(6);
  });

  it('writes nothing more once stopped, and stop waits for the write under way', async () => {
    let finished = false;
    const writes: JobProgress[] = [];
    const write: ProgressWrite = async (progress) => {
      writes.push(progress);
      await new Promise((resolve) => setTimeout(resolve, 200));
      finished = true;
    };
    const reporter = new ProgressReporter(write, 1000);
    reporter.start();
    await vi.advanceTimersByTimeAsync(0);

    const stopped = reporter.stop();
    await vi.advanceTimersByTimeAsync(200);
    await stopped;
    await vi.advanceTimersByTimeAsync(10_000);

    expect(finished).toBe(true);
    expect(writes).toHaveLength(1);
  });
});
