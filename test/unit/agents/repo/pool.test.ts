import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { createCodecPool } from '../../../../agents/repo/pool';
import { KnownIds } from '../../../../agents/repo/known-ids';
import { sha256Hex } from '../../../../agents/repo/codec';

/** The nice value of every thread of this process, by thread id (field 19 of /proc stat). */
function threadNices(): Map<number, number> {
  const nices = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces: count fields after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    nices.set(Number(tid), Number(fields[16]));
  }
  return nices;
}

describe('the codec pool', () => {
  const pool = createCodecPool(randomBytes(32), { threads: 2, level: 3 });
  afterAll(() => pool.close());

  it('runs its workers below the feeding thread, so a preempted feeder does not starve them', async () => {
    const ring = new SharedArrayBuffer(4096);
    new Uint8Array(ring).fill(7);
    const known = new KnownIds(() => []);
    // Both workers busy at once, so both have started.
    const [a, b] = await Promise.all([
      pool.hashSeal(ring, 0, 2048, known.shared),
      pool.hashSeal(ring, 2048, 2048, known.shared),
    ]);
    expect(a.id).toBe(sha256Hex(new Uint8Array(2048).fill(7)));
    expect(b.id).toBe(a.id);

    const nices = threadNices();
    const mine = nices.get(Number(readFileSync('/proc/thread-self/stat', 'utf8').split(' ')[0]))!;
    const lowered = [...nices.values()].filter((nice) => nice === Math.min(19, mine + 5));
    expect(lowered.length).toBeGreaterThanOrEqual(2);
  });
});
