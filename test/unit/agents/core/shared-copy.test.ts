import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { copyBytes } from '../../../../agents/core/shared-copy';

/** Every alignment of source and target, both directions, lengths around the bounce buffer's. */
describe('copyBytes', () => {
  const lengths = [0, 1, 63, 64, 65, 4096 + 3, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 5, 200_003];
  const shared = (n: number) => new Uint8Array(new SharedArrayBuffer(n));

  for (const [name, makeTarget, makeSource] of [
    ['plain into shared', shared, (n: number) => new Uint8Array(n)],
    ['shared into plain', (n: number) => new Uint8Array(n), shared],
    ['plain into plain', (n: number) => new Uint8Array(n), (n: number) => new Uint8Array(n)],
    ['shared into shared', shared, shared],
  ] as const) {
    it(`copies ${name} exactly, at every alignment, touching nothing else`, () => {
      for (const length of lengths) {
        for (const so of [0, 1, 3, 8]) {
          for (const to of [0, 5, 7]) {
            const bytes = randomBytes(length);
            const source = makeSource(length + 16).subarray(so, so + length);
            source.set(bytes);
            const target = makeTarget(length + 32);
            target.fill(0xa5);
            const view = target.subarray(2);
            copyBytes(view, to, source);
            expect(Buffer.from(view.subarray(to, to + length)).equals(bytes)).toBe(true);
            expect(target.subarray(0, 2 + to).every((b) => b === 0xa5)).toBe(true);
            expect(target.subarray(2 + to + length).every((b) => b === 0xa5)).toBe(true);
          }
        }
      }
    });
  }

  it('refuses to write past the target, as set does', () => {
    const target = new Uint8Array(new SharedArrayBuffer(100));
    expect(() => copyBytes(target, 50, new Uint8Array(100))).toThrow(RangeError);
    expect(() => copyBytes(target, 1, new Uint8Array(100))).toThrow(RangeError);
  });
});
