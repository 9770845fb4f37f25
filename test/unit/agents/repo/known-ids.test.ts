import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KnownIds, mightContain } from '../../../../agents/repo/known-ids';

const digestOf = (n: number) => createHash('sha256').update(`chunk ${n}`).digest();

describe('KnownIds', () => {
  it('contains every id added, through its rebuilds, as the workers see it', () => {
    const ids: string[] = [];
    const known = new KnownIds(() => ids);
    for (let n = 0; n < 600_000; n++) {
      const id = digestOf(n).toString('hex');
      ids.push(id);
      known.add(id);
    }
    const words = known.shared;
    expect(words.buffer).toBeInstanceOf(SharedArrayBuffer);
    for (let n = 0; n < 600_000; n += 997) expect(mightContain(words, digestOf(n))).toBe(true);
  });

  it('starts with the ids it is given and rarely claims an id it never saw', () => {
    const ids = Array.from({ length: 10_000 }, (_, n) => digestOf(n).toString('hex'));
    const known = new KnownIds(() => ids);
    expect(ids.every((id) => mightContain(known.shared, Buffer.from(id, 'hex')))).toBe(true);
    let falsePositives = 0;
    for (let n = 10_000; n < 60_000; n++)
      if (mightContain(known.shared, digestOf(n))) falsePositives++;
    expect(falsePositives).toBeLessThan(50);
  });
});
