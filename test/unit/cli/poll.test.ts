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
});
