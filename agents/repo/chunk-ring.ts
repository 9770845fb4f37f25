/**
 * The writer's chunking buffer: a ring in a SharedArrayBuffer. Files are read straight into it
 * (`space`/`commit`) and other sources' pieces are copied in once (`write`); the calling thread
 * finds the cut points on it (findBoundary, whose scan is WebAssembly reading the ring's memory in
 * place) and the codec workers hash and seal each chunk straight from it, so a chunk's bytes are
 * never copied out, transferred or collected.
 *
 * Invariants:
 *  - a chunk is one contiguous span, never wrapping around the end: when the write position
 *    reaches the end, the unchunked tail (< maxSize bytes) is copied to the front, once the front
 *    is free;
 *  - spans are held from `next()` until `release()`, oldest first, and nothing is written over a
 *    held span; the caller releases each span once its chunk is hashed (and sealed if new).
 *
 * Memory: `size` bytes whatever the stream size (at least 4 × maxSize so that a full chunk, the
 * tail being chunked and the spans in flight always fit).
 *
 * The ring is page-aligned memory, and with `align` (core/direct-io.ts ALIGN) the space it offers
 * starts and ends at multiples of it, so a file can be read into it with O_DIRECT: after a wrap
 * the tail is placed so that it ends on such a boundary.
 */
import { alignedWasmMemory } from '../core/direct-io';
import { copyBytes } from '../core/shared-copy';
import { findBoundary, GEAR_TABLE_BYTES, gearScanner, type Scan } from './chunker';
import type { ChunkingParams } from './types';

export interface Span {
  start: number;
  end: number;
}

export class ChunkRing {
  readonly buffer: SharedArrayBuffer;
  private readonly view: Uint8Array;
  /** Start of the bytes not cut into a chunk yet. */
  private pos = 0;
  /** End of the bytes written. The unchunked bytes are [pos, filled). */
  private filled = 0;
  /** Spans handed out and not released yet, oldest first. */
  private readonly held: Span[] = [];
  /** Whether the last `space()` is still being filled (until `commit`). */
  private reserved = false;
  /** The chunker's scan in WebAssembly, over this ring's memory (its table after the ring). */
  private readonly scan: Scan;

  constructor(
    size: number,
    private readonly params: ChunkingParams,
    private readonly align = 1,
  ) {
    if (size < 4 * params.maxSize + align - 1)
      throw new RangeError('the ring must hold 4 × maxSize bytes (and one alignment)');
    const tableAt = Math.ceil(size / 4) * 4;
    const memory = alignedWasmMemory(tableAt + GEAR_TABLE_BYTES);
    this.buffer = memory.buffer as SharedArrayBuffer;
    this.view = new Uint8Array(this.buffer, 0, size);
    this.scan = gearScanner(memory, tableAt);
  }

  get heldSpans(): number {
    return this.held.length;
  }

  /** A view of `length` bytes of the ring from `start` (a held span's bytes). */
  bytes(start: number, length: number): Uint8Array {
    return this.view.subarray(start, start + length);
  }

  /** Forgets all data and spans (a new stream; the caller waited for every span's task). */
  reset(): void {
    this.pos = 0;
    this.filled = 0;
    this.held.length = 0;
    this.reserved = false;
  }

  /**
   * The free bytes that may be written next (up to `max`; when `aligned` and the write position
   * is aligned, a multiple of `align`): a reader fills them and then calls `commit` with the count, so a file
   * is read straight into the ring without a copy. Chunks may be cut and released meanwhile; no
   * other `space()` until the commit. Undefined when nothing fits: the caller must release a
   * span first (there is one then).
   */
  space(max = Infinity, aligned = true): Uint8Array | undefined {
    let length = this.room(max, aligned);
    if (length === 0) {
      if (this.limit() !== this.view.length || !this.wrap()) return undefined;
      length = this.room(max, aligned);
      if (length === 0) return undefined;
    }
    this.reserved = true;
    return this.view.subarray(this.filled, this.filled + length);
  }

  /** Marks `n` bytes of the last `space()` as written (0 at the end of the stream). */
  commit(n: number): void {
    this.filled += n;
    this.reserved = false;
  }

  /** How much `space(max, aligned)` can offer without wrapping. */
  private room(max: number, aligned: boolean): number {
    const length = Math.min(this.limit(), this.filled + max) - this.filled;
    if (!aligned || this.filled % this.align !== 0) return length;
    return length - (length % this.align);
  }

  /**
   * Copies as much of `piece[offset..]` as fits before the oldest held span (or the end); 0 when
   * nothing fits: the caller must release a span first (there is one then).
   */
  write(piece: Uint8Array, offset: number): number {
    const space = this.space(piece.length - offset, false);
    if (!space) return 0;
    // Into shared memory from anywhere: without V8's byte-by-byte copy (core/shared-copy.ts).
    copyBytes(space, 0, piece.subarray(offset, offset + space.length));
    this.commit(space.length);
    return space.length;
  }

  /**
   * The next chunk, held until released: cut once maxSize bytes are buffered (so the cut is
   * final), or, at the end of the stream (`final`), whatever is left.
   */
  next(final: boolean): Span | undefined {
    const available = this.filled - this.pos;
    if (available === 0 || (available < this.params.maxSize && !final)) return undefined;
    const found = findBoundary(this.view, this.pos, this.filled, this.params, this.scan);
    const span = { start: this.pos, end: found < 0 ? this.filled : found };
    this.pos = span.end;
    this.held.push(span);
    return span;
  }

  /**
   * The unchunked bytes as one chunk, held until released, wherever their content would cut
   * them: a batch of small files (core/tree/backup.ts), which the caller keeps under maxSize.
   */
  nextWhole(): Span | undefined {
    if (this.filled === this.pos) return undefined;
    const span = { start: this.pos, end: this.filled };
    this.pos = span.end;
    this.held.push(span);
    return span;
  }

  /** Releases the oldest held span. */
  release(): void {
    this.held.shift();
    if (this.held.length === 0 && this.pos === this.filled && !this.reserved) {
      this.pos = 0;
      this.filled = 0;
    }
  }

  /** Writes may go up to the oldest held span when it lies ahead (after a wrap), else the end. */
  private limit(): number {
    const oldest = this.held[0];
    return oldest && oldest.start >= this.filled ? oldest.start : this.view.length;
  }

  /**
   * Moves the unchunked tail to the front, ending on an `align` boundary, if the front has room
   * for a whole chunk after it.
   */
  private wrap(): boolean {
    const tail = this.filled - this.pos;
    const end = Math.ceil(tail / this.align) * this.align;
    const oldest = this.held[0];
    if (oldest && oldest.start < this.params.maxSize + end) return false;
    this.view.copyWithin(end - tail, this.pos, this.filled);
    this.pos = end - tail;
    this.filled = end;
    return true;
  }
}
