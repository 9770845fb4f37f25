import { describe, expect, it } from 'vitest';
import { pollDelay } from '../../../cli/poll';

describe('the CLI waiting for a job', () => {
  it('looks again within 100 ms to 1 s, sees the end at most 5 % late after 2 s, and never speeds up', () => {
    let last = 0;
    for (let waited = 0; waited <= 3_600_000; waited += waited < 10_000 ? 7 : 997) {
      const delay = pollDelay(waited);
      expect(delay).toBeGreaterThanOrEqual(100);
      expect(delay).toBeLessThanOrEqual(1000);
      if (waited >= 2000) expect(delay).toBeLessThanOrEqual(Math.max(100, waited * 0.05));
      expect(delay).toBeGreaterThanOrEqual(last);
      last = delay;
    }
  });

  it('looks again by the time the ETA says the bytes are moved (at most 0.5 s early on), and every 100 ms once they are', () => {
    const now = Date.parse('2026-12-07T01:00:10.000Z');
    const progress = {
      phase: 'reading',
      bytesDone: 600,
      bytesTotal: 1000,
      rate: 100,
      etaSeconds: 4,
      updatedAt: '2026-12-07T01:00:09.000Z',
    };
    // A minute in, a twentieth would be 1 s; the ETA says the reading ends in 3 s: 1 s.
    expect(pollDelay(60_000, progress, now)).toBe(1000);
    // Reported 4 s left 3.7 s ago: look again in 300 ms.
    expect(pollDelay(60_000, { ...progress, updatedAt: '2026-12-07T01:00:06.300Z' }, now)).toBe(
      300,
    );
    // Early in the job, the ETA seconds away: every 0.5 s, not every 100 ms.
    expect(pollDelay(300, progress, now)).toBe(500);
    expect(pollDelay(300, { ...progress, updatedAt: '2026-12-07T01:00:06.200Z' }, now)).toBe(200);
    // Past its ETA, or every byte moved: every 100 ms.
    expect(pollDelay(60_000, { ...progress, updatedAt: '2026-12-07T01:00:01.000Z' }, now)).toBe(
      100,
    );
    expect(pollDelay(60_000, { ...progress, bytesDone: 1000 }, now)).toBe(100);
    // Without a total, a rate or a readable time: as without progress.
    const { bytesTotal: _t, ...noTotal } = progress;
    expect(pollDelay(60_000, noTotal, now)).toBe(1000);
    expect(pollDelay(60_000, { ...progress, rate: 0 }, now)).toBe(1000);
    expect(pollDelay(60_000, { ...progress, updatedAt: 'soon' }, now)).toBe(1000);
  });
});
