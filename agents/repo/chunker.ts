/**
 * Content-defined chunking: FastCDC (Xia et al., USENIX ATC 2016) over a Gear rolling hash.
 *
 * A cut is placed after byte i when the Gear hash of the bytes just before and including i has all
 * the bits of a mask clear, so boundaries follow the content rather than offsets: an insertion
 * moves only the chunks around it, and the chunks after it resynchronise on the same cut points.
 *
 * The hash is `h = (h << 1) + G[byte]` in 32 bits. Bit k of h depends on the last k + 1 bytes only,
 * so the hash "remembers" a 32-byte window and the masks test the top bits, which see all of it.
 * FastCDC spreads its mask bits over the upper part of a 64-bit word for the same reason; in a
 * 32-bit word with 18-22 mask bits, the contiguous top bits are that spread at its widest window.
 *
 * FastCDC's three speed/dedup levers are all here:
 *  - cut-point skipping: the first `minSize` bytes of a chunk are not hashed at all;
 *  - normalized chunking (level 2): before `avgSize` the mask has log2(avg) + 2 bits (a cut is 4×
 *    less likely), after it log2(avg) − 2 bits (4× more likely), which narrows the size spread
 *    around the average. The loose mask's bits are a subset of the strict one's, so a position that
 *    cut under the strict mask also cuts under the loose one: this helps chunks resynchronise after
 *    an edit;
 *  - a hard cut at `maxSize`: a run of one repeated byte value (zeros: sparse disk regions) gives a
 *    constant hash that, for this table, never clears either mask.
 *
 * Compatibility: a repository's chunk ids depend on the Gear table, the mask layout, the cut rule
 * and the params. Changing any of them moves every boundary, so new backups would share nothing
 * with existing ones. Such a change must bump CHUNKER_VERSION, which a repository should record
 * next to its ChunkingParams (test/unit/agents/repo/chunker.test.ts pins version 1's cut points).
 */
import type { WasmMemory } from '../core/direct-io';
import { GEAR_SCAN_WASM } from './gear-scan-wasm';
import type { ChunkingParams } from './types';
import { DEFAULT_CHUNKING } from './types';

/** The boundary algorithm's version (table, seed, masks, cut rule). Bump on any change to them. */
export const CHUNKER_VERSION = 1;

/** Seed of the Gear table's generator; part of CHUNKER_VERSION 1. */
const GEAR_SEED = 0x5354_4f57; // "STOW"

/**
 * 256 pseudo-random 32-bit values from a fixed seed (SplitMix32-style mixer), generated at module
 * load rather than pasted as a literal. Stored as Int32Array so the hash stays a V8 int32: the
 * same values read through a Uint32Array would become doubles above 2^31 and deoptimise the loop.
 */
const GEAR: Int32Array = (() => {
  const table = new Int32Array(256);
  let state = GEAR_SEED | 0;
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e37_79b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85eb_ca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2_ae35);
    table[i] = z ^ (z >>> 16);
  }
  return table;
})();

/** A mask with the top `bits` bits of a 32-bit word set, as an int32. */
function topBits(bits: number): number {
  return bits >= 32 ? -1 : ~(-1 >>> bits) | 0;
}

/** Normalization level (FastCDC's NC-2): the strict and loose masks differ by ±2 bits. */
const NORMALIZATION = 2;

interface Masks {
  strict: number;
  loose: number;
}

/** Validates the params and derives the masks: a few nanoseconds, once per chunk. */
function masksFor(params: ChunkingParams): Masks {
  validate(params);
  const bits = Math.round(Math.log2(params.avgSize));
  return { strict: topBits(bits + NORMALIZATION), loose: topBits(bits - NORMALIZATION) };
}

function validate({ minSize, avgSize, maxSize }: ChunkingParams): void {
  const ok =
    Number.isSafeInteger(minSize) &&
    Number.isSafeInteger(avgSize) &&
    Number.isSafeInteger(maxSize) &&
    minSize > 0 &&
    minSize <= avgSize &&
    avgSize <= maxSize &&
    avgSize >= 64 &&
    avgSize <= 2 ** 29 &&
    maxSize <= 2 ** 31;
  if (!ok) {
    throw new RangeError(
      `invalid chunking params: need 0 < minSize <= avgSize <= maxSize, 64 <= avgSize <= 2^29, ` +
        `got ${minSize}/${avgSize}/${maxSize}`,
    );
  }
}

/**
 * The cut point of the chunk that starts at `start`, looking at `buf[start, end)`.
 *
 * Returns the chunk's exclusive end, in `(start + minSize, start + maxSize]`, or -1 when no cut was
 * found before `end` and fewer than `maxSize` bytes are available (the caller needs more data, or
 * at end of stream takes the rest as the last chunk). Pure: the result depends only on the bytes
 * from `start` on, so a later call with more data available returns the same cut, whatever way the
 * stream was split into reads.
 */
export function findBoundary(
  buf: Uint8Array,
  start: number,
  end: number,
  params: ChunkingParams = DEFAULT_CHUNKING,
  scan: Scan = scanJs,
): number {
  const { strict, loose } = masksFor(params);
  const limit = Math.min(end, buf.length, start + params.maxSize);
  const normal = Math.min(limit, start + params.avgSize);
  const first = start + params.minSize;

  let cut = scan(buf, first, normal, strict, 0);
  if (cut >= 0) return cut;

  // The hash at `normal - 1` is a function of the 32 bytes up to it (older bytes are shifted out),
  // so recomputing it over that window continues exactly where the strict scan stopped.
  const g = GEAR;
  let h = 0;
  for (let i = Math.max(first, normal - 32); i < normal; i++) h = ((h << 1) + g[buf[i]!]!) | 0;
  cut = scan(buf, Math.max(first, normal), limit, loose, h);
  if (cut >= 0) return cut;

  return limit - start >= params.maxSize ? limit : -1;
}

/**
 * The hash's value after 32 or more zero bytes: `h = 2h + G[0]` has the fixed point `h = -G[0]`,
 * and the 32-bit shift has pushed everything older out by then. A zero byte keeps a hash at this
 * value, so once a scan sees it (and no cut: it was tested) it may jump over a run of zeros
 * without hashing them and stay exactly where the byte-by-byte loop would be. Sparse regions of
 * disk images (a quarter of bench/'s data set) cost a word test per 4 bytes instead of a hash
 * step per byte.
 */
const ZERO_RUN_HASH = -GEAR[0]! | 0;
/** The scan checks for a zero run every this many bytes: one compare per 4 KiB of random data. */
const SCAN_BLOCK = 4096;

/**
 * The inner loop: rolls the hash over `buf[i, stop)` from `h` and returns the position after the
 * first byte where `h & mask` is 0, or -1.
 */
export type Scan = (buf: Uint8Array, i: number, stop: number, mask: number, h: number) => number;

/**
 * The inner loop in JavaScript, for any buffer (the reference gearScanner's must match). Unrolled
 * by 8 because V8 does not unroll loops: on Node 20 here the one-byte loop ran at ~540 MB/s, by 4
 * ~1,100, by 8 ~1,500 (by 16: no better). Everything is an int32 in a register; no calls, no
 * allocation, except between blocks of SCAN_BLOCK bytes, where a hash at ZERO_RUN_HASH skips the
 * zero run that follows.
 */
export const scanJs: Scan = (buf, i, stop, mask, h) => {
  const g = GEAR;
  const stop8 = stop - 7;
  while (i < stop8) {
    const block8 = Math.min(stop8, i + SCAN_BLOCK);
    for (; i < block8; i += 8) {
      h = ((h << 1) + g[buf[i]!]!) | 0;
      if ((h & mask) === 0) return i + 1;
      h = ((h << 1) + g[buf[i + 1]!]!) | 0;
      if ((h & mask) === 0) return i + 2;
      h = ((h << 1) + g[buf[i + 2]!]!) | 0;
      if ((h & mask) === 0) return i + 3;
      h = ((h << 1) + g[buf[i + 3]!]!) | 0;
      if ((h & mask) === 0) return i + 4;
      h = ((h << 1) + g[buf[i + 4]!]!) | 0;
      if ((h & mask) === 0) return i + 5;
      h = ((h << 1) + g[buf[i + 5]!]!) | 0;
      if ((h & mask) === 0) return i + 6;
      h = ((h << 1) + g[buf[i + 6]!]!) | 0;
      if ((h & mask) === 0) return i + 7;
      h = ((h << 1) + g[buf[i + 7]!]!) | 0;
      if ((h & mask) === 0) return i + 8;
    }
    if (h === ZERO_RUN_HASH) i = zeroRunEnd(buf, i, stop);
  }
  for (; i < stop; i++) {
    h = ((h << 1) + g[buf[i]!]!) | 0;
    if ((h & mask) === 0) return i + 1;
  }
  return -1;
};

/** Bytes of memory gearScanner takes for the Gear table. */
export const GEAR_TABLE_BYTES = 4 * 256;

/** The parts of WebAssembly used here (the project's TypeScript libs do not declare them). */
const wasm = (
  globalThis as unknown as {
    WebAssembly: {
      Module: new (bytes: Uint8Array) => object;
      Instance: new (
        module: object,
        imports: { ring: { memory: WasmMemory } },
      ) => { exports: { scan: (...args: number[]) => number } };
    };
  }
).WebAssembly;

/** gear-scan.wat compiled, once per thread. */
let gearScanModule: object | undefined;

/**
 * The inner loop in WebAssembly (gear-scan.wat: the same cuts, ~3.2 GB/s against the
 * JavaScript loop's ~1.5 here), for views of `memory` only: the module reads the memory in place,
 * and its Gear table is written at `tableAt` (GEAR_TABLE_BYTES, which the caller keeps out of
 * every view it scans). Positions must stay below 2^31, as in the JavaScript loop.
 */
export function gearScanner(memory: WasmMemory, tableAt: number): Scan {
  const { buffer } = memory;
  if (
    tableAt % 4 !== 0 ||
    tableAt + GEAR_TABLE_BYTES > buffer.byteLength ||
    buffer.byteLength > 2 ** 31
  )
    throw new RangeError(`no room for the Gear table at ${tableAt} of ${buffer.byteLength} bytes`);
  const table = new DataView(buffer, tableAt, GEAR_TABLE_BYTES);
  for (let b = 0; b < 256; b++) table.setInt32(4 * b, GEAR[b]!, true);
  gearScanModule ??= new wasm.Module(Buffer.from(GEAR_SCAN_WASM, 'base64'));
  const { scan } = new wasm.Instance(gearScanModule, { ring: { memory } }).exports;
  return (buf, i, stop, mask, h) => {
    if (buf.buffer !== buffer || stop > buf.length)
      throw new RangeError('gearScanner: a span outside a view of its memory');
    const at = buf.byteOffset;
    const cut = scan(at + i, at + stop, mask, h, tableAt, ZERO_RUN_HASH);
    return cut < 0 ? cut : cut - at;
  };
}

/** The first position in `[i, stop)` whose byte is not 0, or `stop`. */
function zeroRunEnd(buf: Uint8Array, i: number, stop: number): number {
  while (i < stop && ((buf.byteOffset + i) & 3) !== 0) {
    if (buf[i] !== 0) return i;
    i++;
  }
  const words = (stop - i) >>> 2;
  if (words > 0) {
    const w = new Int32Array(buf.buffer, buf.byteOffset + i, words);
    let k = 0;
    for (; k + 8 <= words; k += 8) {
      if (
        (w[k]! |
          w[k + 1]! |
          w[k + 2]! |
          w[k + 3]! |
          w[k + 4]! |
          w[k + 5]! |
          w[k + 6]! |
          w[k + 7]!) !==
        0
      )
        break;
    }
    while (k < words && w[k] === 0) k++;
    i += k * 4;
  }
  while (i < stop && buf[i] === 0) i++;
  return i;
}

/**
 * Splits a stream into content-defined chunks, in order. The concatenation of the yielded chunks is
 * the stream; an empty stream yields nothing; every chunk but the last is within
 * (minSize, maxSize], the last one may be shorter than minSize.
 *
 * Each yielded Buffer is a fresh copy that owns its whole ArrayBuffer (byteOffset 0, byteLength ===
 * length), so the consumer may keep it, mutate it or transfer it to a worker thread without a copy;
 * the chunker never touches it again.
 *
 * Memory: one working buffer of 2 × maxSize, whatever the stream's length, plus the chunks the
 * consumer still holds and the source's own reads. Source pieces are copied in, never retained, so
 * the source may reuse its buffers once the generator asks for the next piece.
 */
export async function* chunkStream(
  source: AsyncIterable<Buffer | Uint8Array>,
  params: ChunkingParams = DEFAULT_CHUNKING,
): AsyncGenerator<Buffer> {
  masksFor(params); // validate before reading anything
  const { maxSize } = params;
  // 2 × maxSize: findBoundary is only called with maxSize bytes available (so it always cuts and
  // never rescans), and compaction moves fewer than maxSize bytes once per maxSize bytes consumed.
  const work = new Uint8Array(2 * maxSize);
  let pos = 0; // start of the current chunk
  let filled = 0; // end of the buffered bytes

  for await (const piece of source) {
    let offset = 0;
    while (offset < piece.length) {
      if (filled === work.length) {
        work.copyWithin(0, pos, filled);
        filled -= pos;
        pos = 0;
      }
      const n = Math.min(piece.length - offset, work.length - filled);
      work.set(piece.subarray(offset, offset + n), filled);
      filled += n;
      offset += n;

      while (filled - pos >= maxSize) {
        const cut = findBoundary(work, pos, filled, params);
        yield ownedCopy(work, pos, cut);
        pos = cut;
      }
    }
  }

  while (pos < filled) {
    const found = findBoundary(work, pos, filled, params);
    const cut = found < 0 ? filled : found;
    yield ownedCopy(work, pos, cut);
    pos = cut;
  }
}

/** A Buffer of its own (not a slice of Node's shared pool) holding `src[from, to)`. */
function ownedCopy(src: Uint8Array, from: number, to: number): Buffer {
  const out = Buffer.allocUnsafeSlow(to - from);
  out.set(src.subarray(from, to));
  return out;
}

/**
 * Whether every byte of `buf` is 0: the pipeline stores all-zero chunks (sparse disk regions) as a
 * marker instead of compressing them. Reads the 4-byte-aligned middle through an Int32Array view,
 * ORing 8 words per step and testing once per 4 KiB (~5 GB/s here, ~4× the chunker, against ~3.7
 * word by word); the unaligned head and tail go bytewise. A random chunk fails in its first 4 KiB.
 * Not Float64Array: the bytes of -0.0 (80 00 … 00) compare equal to 0.
 */
export function isAllZero(buf: Uint8Array): boolean {
  const length = buf.length;
  const head = (4 - (buf.byteOffset & 3)) & 3;
  if (length < head + 4) {
    for (let i = 0; i < length; i++) if (buf[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < head; i++) if (buf[i] !== 0) return false;

  const words = (length - head) >>> 2;
  const w = new Int32Array(buf.buffer, buf.byteOffset + head, words);
  const words8 = words - 7;
  let i = 0;
  while (i < words8) {
    const stop = Math.min(words8, i + 1024);
    let acc = 0;
    for (; i < stop; i += 8) {
      acc |=
        w[i]! | w[i + 1]! | w[i + 2]! | w[i + 3]! | w[i + 4]! | w[i + 5]! | w[i + 6]! | w[i + 7]!;
    }
    if (acc !== 0) return false;
  }
  for (; i < words; i++) if (w[i] !== 0) return false;

  for (let j = head + words * 4; j < length; j++) if (buf[j] !== 0) return false;
  return true;
}
