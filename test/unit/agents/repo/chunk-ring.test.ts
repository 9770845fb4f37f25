import { describe, expect, it } from 'vitest';
import { ChunkRing, type Span } from '../../../../agents/repo/chunk-ring';
import { findBoundary } from '../../../../agents/repo/chunker';
import type { ChunkingParams } from '../../../../agents/repo/types';

const SMALL: ChunkingParams = { minSize: 256, avgSize: 1024, maxSize: 4096 };

/** xorshift32 bytes: the same for the same seed. */
function bytesOf(length: number, seed: number, zeroEvery = 0): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed | 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  // Zero runs longer than maxSize, as in sparse disk images.
  if (zeroEvery > 0)
    for (let i = 0; i + zeroEvery < length; i += 2 * zeroEvery) out.fill(0, i, i + zeroEvery);
  return out;
}

function referenceCuts(data: Uint8Array, params: ChunkingParams): number[] {
  const cuts: number[] = [];
  for (let pos = 0; pos < data.length;) {
    const cut = findBoundary(data, pos, data.length, params);
    pos = cut < 0 ? data.length : cut;
    cuts.push(pos);
  }
  return cuts;
}

/**
 * Drives a ring like the writer does: copies reads in, cuts chunks, and releases them in order
 * `lag` chunks later (or when the ring is full), checking at release that a held span still holds
 * its chunk's bytes (nothing was written over it).
 */
function chunkThroughRing(
  data: Uint8Array,
  readSize: (i: number) => number,
  lag: number,
  ringSize = 4 * SMALL.maxSize,
): number[] {
  const ring = new ChunkRing(ringSize, SMALL);
  const view = new Uint8Array(ring.buffer);
  const held: Array<{ span: Span; from: number }> = [];
  const cuts: number[] = [];
  let consumed = 0;
  const releaseOldest = () => {
    const { span, from } = held.shift()!;
    const length = span.end - span.start;
    expect(view.subarray(span.start, span.end)).toEqual(data.subarray(from, from + length));
    ring.release();
  };
  const cut = (final: boolean) => {
    for (let span = ring.next(final); span; span = ring.next(final)) {
      expect(span.end).toBeLessThanOrEqual(ringSize);
      held.push({ span, from: consumed });
      consumed += span.end - span.start;
      cuts.push(consumed);
      while (held.length > lag) releaseOldest();
    }
  };
  for (let offset = 0, i = 0; offset < data.length; i++) {
    const piece = data.subarray(offset, offset + Math.max(1, readSize(i)));
    offset += piece.length;
    for (let at = 0; at < piece.length;) {
      const n = ring.write(piece, at);
      if (n === 0) {
        expect(held.length).toBeGreaterThan(0);
        releaseOldest();
        continue;
      }
      at += n;
      cut(false);
    }
  }
  cut(true);
  while (held.length > 0) releaseOldest();
  return cuts;
}

describe('ChunkRing', () => {
  const cases: Array<[string, (i: number) => number, number]> = [
    ['1-byte reads, released at once', () => 1, 0],
    ['3 KiB reads, 3 chunks held', () => 3000, 3],
    ['reads larger than the ring, 8 chunks held', () => 70_000, 8],
    ['mixed reads, 20 chunks held', (i) => [1, 5000, 17, 40_000, 333][i % 5]!, 20],
  ];
  it.each(cases)('cuts where findBoundary cuts the whole input, with %s', (_name, reads, lag) => {
    for (const [seed, zeros] of [
      [1, 0],
      [2, 9000],
    ] as const) {
      const data = bytesOf(300_000 + seed, seed, zeros);
      expect(chunkThroughRing(data, reads, lag)).toEqual(referenceCuts(data, SMALL));
    }
  });

  it('yields nothing for an empty stream', () => {
    const ring = new ChunkRing(4 * SMALL.maxSize, SMALL);
    expect(ring.next(true)).toBeUndefined();
  });

  it('starts afresh after reset, whatever was held', () => {
    const ring = new ChunkRing(4 * SMALL.maxSize, SMALL);
    ring.write(bytesOf(10_000, 3), 0);
    expect(ring.next(false)).toBeDefined();
    ring.reset();
    expect(ring.heldSpans).toBe(0);
    expect(ring.next(true)).toBeUndefined();
  });

  it('refuses a ring smaller than 4 × maxSize', () => {
    expect(() => new ChunkRing(4 * SMALL.maxSize - 1, SMALL)).toThrow(RangeError);
  });

  it('offers aligned space for direct reads, cutting and releasing while a read is under way', () => {
    const align = 512;
    const ringSize = 4 * SMALL.maxSize + align - 1;
    for (const [seed, zeros] of [
      [5, 0],
      [6, 7000],
    ] as const) {
      const data = bytesOf(200_000 + seed, seed, zeros);
      const ring = new ChunkRing(ringSize, SMALL, align);
      const view = new Uint8Array(ring.buffer);
      const held: Array<{ span: Span; from: number }> = [];
      const cuts: number[] = [];
      let consumed = 0;
      let read = 0;
      const releaseOldest = () => {
        const { span, from } = held.shift()!;
        expect(view.subarray(span.start, span.end)).toEqual(
          data.subarray(from, from + span.end - span.start),
        );
        ring.release();
      };
      const cut = (final: boolean) => {
        for (let span = ring.next(final); span; span = ring.next(final)) {
          held.push({ span, from: consumed });
          consumed += span.end - span.start;
          cuts.push(consumed);
          // Release as the writer does, possibly while the next read is reserved.
          while (held.length > 3) releaseOldest();
        }
      };
      for (let i = 0; ; i++) {
        const space = ring.space(5000);
        if (!space) {
          releaseOldest();
          continue;
        }
        // Like an O_DIRECT read: aligned start and length, until the short read at the end.
        if (read % align === 0) {
          expect(space.byteOffset % align).toBe(0);
          expect(space.length % align).toBe(0);
        }
        const n = Math.min(space.length, data.length - read);
        space.set(data.subarray(read, read + n));
        // The bytes of earlier reads are cut while this one is "under way".
        cut(false);
        ring.commit(n);
        read += n;
        if (n === 0) break;
      }
      cut(true);
      while (held.length > 0) releaseOldest();
      expect(cuts).toEqual(referenceCuts(data, SMALL));
    }
  });
});
