import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_HOLD_SWEEP_MS, holdSweepMs } from '../../../../agents/worker/main';

describe('the hold sweep period', () => {
  const saved = process.env.STOWAGE_HOLD_SWEEP_SECONDS;
  afterEach(() => {
    if (saved === undefined) delete process.env.STOWAGE_HOLD_SWEEP_SECONDS;
    else process.env.STOWAGE_HOLD_SWEEP_SECONDS = saved;
  });

  it('is 30 s unless told otherwise', () => {
    delete process.env.STOWAGE_HOLD_SWEEP_SECONDS;
    expect(holdSweepMs({})).toBe(DEFAULT_HOLD_SWEEP_MS);
    expect(DEFAULT_HOLD_SWEEP_MS).toBe(30_000);
  });

  it('takes STOWAGE_HOLD_SWEEP_SECONDS, and the agent setting over it', () => {
    for (const [text, ms] of [
      ['1', 1000],
      ['0.5', 500],
      ['120', 120_000],
    ] as const) {
      process.env.STOWAGE_HOLD_SWEEP_SECONDS = text;
      expect(holdSweepMs({})).toBe(ms);
      expect(holdSweepMs({ holdSweepMs: 2500 })).toBe(2500);
    }
  });

  it('refuses a value that is not a positive number, naming the variable', () => {
    for (const text of ['0', '-3', 'soon']) {
      process.env.STOWAGE_HOLD_SWEEP_SECONDS = text;
      expect(() => holdSweepMs({})).toThrow(/STOWAGE_HOLD_SWEEP_SECONDS must be a positive number/);
    }
  });
});
