/**
 * Direct I/O (O_DIRECT) for the agent's big sequential transfers: reading a disk image or a
 * device for a backup and writing one back (path driver), and writing packs into a directory
 * repository (DirStore).
 *
 * Through the page cache, every byte of a multi-gigabyte image costs the host a page of memory to
 * allocate, copy into, write back and reclaim, and pushes out whatever the host had cached (the
 * VMs' and containers' own files). With O_DIRECT the device reads into and writes from the
 * agent's own few buffers. Measured on the bench machine (a VM whose free memory is handed back
 * to the hypervisor, so every new page-cache page is expensive), writing a new 2 GiB file cost
 * 3-6 CPU-seconds of kernel time buffered and 0.4 with O_DIRECT, and reading an uncached one 4.5
 * against 0.1.
 *
 * O_DIRECT wants the memory, the file offset and the length aligned to the device's logical block
 * size; ALIGN (4 KiB) covers 512-byte and 4K-sector devices, and `alignedMemory` gives
 * page-aligned buffers (a WebAssembly memory, which V8 maps at a page boundary; Node's Buffers
 * come from malloc and are not aligned). Wherever O_DIRECT is refused (a file system without it,
 * EINVAL on a write), the same code carries on through the page cache: direct I/O is an
 * optimisation, never a requirement.
 */
import { execFile } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import { promisify } from 'node:util';
import { copyBytes } from './shared-copy';

/** Alignment of memory, offsets and lengths for every direct transfer. */
export const ALIGN = 4096;

const WASM_PAGE = 64 * 1024;

/** A WebAssembly.Memory: the one part of WebAssembly used here (the project's TypeScript libs do not declare it). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
}

const { Memory } = (
  globalThis as unknown as {
    WebAssembly: {
      Memory: new (size: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
    };
  }
).WebAssembly;

/** Every buffer alignedMemory and alignedBuffer made, so that a view can be known to be aligned. */
const alignedBuffers = new WeakSet<ArrayBufferLike>();

/** `bytes` (rounded up to 64 KiB) of zeroed, page-aligned memory that threads can share. */
export function alignedMemory(bytes: number): SharedArrayBuffer {
  return alignedWasmMemory(bytes).buffer as SharedArrayBuffer;
}

/**
 * The same, as the WebAssembly.Memory it is, for a module that works on it in place (the
 * chunking ring's scan, agents/repo/gear-scan.wat).
 */
export function alignedWasmMemory(bytes: number): WasmMemory {
  return pageAligned(bytes, true);
}

/**
 * A Buffer of `bytes` in page-aligned memory that is not shared, so that any API (an S3 client, a
 * socket) takes it as an ordinary Buffer: a repository's pack buffers, which a directory store
 * then writes with O_DIRECT without a copy.
 */
export function alignedBuffer(bytes: number): Buffer {
  return Buffer.from(pageAligned(bytes, false).buffer, 0, bytes);
}

function pageAligned(bytes: number, shared: boolean): WasmMemory {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
  const memory = new Memory({ initial: pages, maximum: pages, shared });
  alignedBuffers.add(memory.buffer);
  return memory;
}

/** Whether `view` starts at an ALIGN boundary of memory from alignedMemory or alignedBuffer. */
export function isAligned(view: Uint8Array): boolean {
  return view.byteOffset % ALIGN === 0 && alignedBuffers.has(view.buffer);
}

export const alignDown = (n: number): number => n - (n % ALIGN);
export const alignUp = (n: number): number => alignDown(n + ALIGN - 1);

/**
 * A second handle on `handle`'s file with O_DIRECT (through /proc/self/fd, so it is the same
 * inode whatever happened to the path), or undefined where the file system refuses it.
 */
export async function openDirect(
  handle: fs.FileHandle,
  flags: number,
): Promise<fs.FileHandle | undefined> {
  try {
    return await fs.open(`/proc/self/fd/${handle.fd}`, flags | constants.O_DIRECT);
  } catch {
    return undefined;
  }
}

function isEinval(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'EINVAL';
}

async function writeAll(handle: fs.FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

/** Staging buffers of a SequentialWriter, and their size. */
const STAGES = 2;
export const STAGE_BYTES = 8 * 1024 * 1024;

/**
 * Stages writers have given back, for the next writer: fresh memory costs a page fault per page
 * on first touch (a pack upload every ~16 MiB would pay it again and again), so stages are
 * re-used, up to what two writers at once need.
 */
const freeStages: Uint8Array[] = [];
const MAX_FREE_STAGES = 2 * STAGES;

/**
 * A stage: aligned, and not shared memory. Pieces come from shared buffers (a restore's ranges
 * are opened by worker threads), and V8 copies between two shared buffers byte by byte when they
 * lie differently modulo 8 (most pieces); into plain memory, copyBytes keeps it a memcpy.
 */
function takeStage(): Uint8Array {
  return freeStages.pop() ?? alignedBuffer(STAGE_BYTES);
}

export interface SequentialWriterOptions {
  /** Zero pieces may be left as holes (a new file); otherwise every zero is written (a device). */
  sparse: boolean;
  /** For tests: how the direct handle is opened (default openDirect). */
  openDirect?: (handle: fs.FileHandle, flags: number) => Promise<fs.FileHandle | undefined>;
}

/**
 * Writes a stream's pieces, which come in order, through O_DIRECT: they are copied into one of
 * two aligned staging buffers, and each full buffer is written while the other fills (a piece in
 * aligned memory at an aligned offset is written from where it is, without the copy). A piece
 * that is all zeros is skipped when `sparse`: whole blocks of it stay holes, and the blocks at its
 * edges are written with zeros. The last partial block goes through the ordinary `handle` (a
 * direct write would have to write past the end of the stream, over a device's other bytes).
 *
 * Falls back on `handle` for everything when O_DIRECT cannot be opened or a direct write fails
 * with EINVAL (alignment the device does not take): the bytes are the same either way.
 */
export class SequentialWriter {
  private readonly stages: Uint8Array[] = [];
  /** The write in flight from each stage, if any. */
  private readonly inFlight: Array<Promise<void> | undefined> = [];
  private current = 0;
  /** File offset of the current stage's byte 0: always a multiple of ALIGN. */
  private base = 0;
  /** Bytes in the current stage. */
  private fill = 0;
  private failure: unknown;
  /** Whether the bytes went around the page cache (false after a fallback). */
  private wentDirect: boolean;

  private constructor(
    private readonly handle: fs.FileHandle,
    private direct: fs.FileHandle | undefined,
    private readonly sparse: boolean,
  ) {
    this.wentDirect = direct !== undefined;
    for (let i = 0; i < STAGES; i++) {
      this.stages.push(takeStage());
      this.inFlight.push(undefined);
    }
  }

  /** A writer onto `handle` (opened for writing) from byte 0. */
  static async open(
    handle: fs.FileHandle,
    options: SequentialWriterOptions,
  ): Promise<SequentialWriter> {
    const direct = await (options.openDirect ?? openDirect)(handle, constants.O_WRONLY);
    return new SequentialWriter(handle, direct, options.sparse);
  }

  /** Whether the bytes went around the page cache (false after a fallback). */
  get isDirect(): boolean {
    return this.wentDirect;
  }

  /** The offset the next piece should start at. */
  private get end(): number {
    return this.base + this.fill;
  }

  /**
   * Takes the piece `bytes` at `offset` (at or after the previous piece's end; a gap is zeros).
   * Resolves once the bytes are copied: the caller may re-use them.
   */
  async write(bytes: Uint8Array, offset: number, zero: boolean): Promise<void> {
    this.throwIfFailed();
    if (offset < this.end) {
      throw new RangeError(`pieces must come in order: ${offset} is before ${this.end}`);
    }
    if (this.sparse && zero) return; // a hole, dealt with by the next piece or by finish
    if (offset > this.end) await this.skipTo(offset);
    if (this.fill === 0 && isAligned(bytes) && bytes.length >= ALIGN) {
      // Aligned memory at an aligned offset (a pack buffer): written from where it is.
      const whole = alignDown(bytes.length);
      await this.writeStage(bytes.subarray(0, whole), this.base);
      this.base += whole;
      bytes = bytes.subarray(whole);
    }
    for (let at = 0; at < bytes.length;) {
      const n = Math.min(bytes.length - at, STAGE_BYTES - this.fill);
      copyBytes(this.stages[this.current]!, this.fill, bytes.subarray(at, at + n));
      this.fill += n;
      at += n;
      if (this.fill === STAGE_BYTES) await this.flush(STAGE_BYTES);
    }
  }

  /**
   * Writes what is staged and waits for every write; the file's length is then at least the last
   * piece's end (a trailing hole is the caller's: truncate). Close the handle after.
   */
  async finish(): Promise<void> {
    const whole = alignDown(this.fill);
    const tail = this.stages[this.current]!.subarray(whole, this.fill);
    const tailAt = this.base + whole;
    if (whole > 0) await this.flush(whole);
    await Promise.all(this.inFlight);
    this.throwIfFailed();
    if (tail.length > 0) await writeAll(this.handle, tail, tailAt);
    await this.release();
  }

  /** Lets go of the direct handle and the stages after a failure (finish does it otherwise). */
  async abandon(): Promise<void> {
    await Promise.allSettled(this.inFlight);
    await this.release().catch(() => undefined);
  }

  private async release(): Promise<void> {
    const direct = this.direct;
    this.direct = undefined;
    for (const stage of this.stages.splice(0)) {
      if (freeStages.length < MAX_FREE_STAGES) freeStages.push(stage);
    }
    await direct?.close();
  }

  /**
   * Moves to `offset` over a hole: zeros inside one block are staged like data; otherwise the
   * block the hole starts in is completed with zeros and written, and staging restarts at the
   * block the hole ends in, its first bytes zeros.
   */
  private async skipTo(offset: number): Promise<void> {
    if (alignDown(offset) <= alignUp(this.end)) {
      await this.stageZeros(offset - this.end);
      return;
    }
    const padded = alignUp(this.fill);
    this.stages[this.current]!.fill(0, this.fill, padded);
    if (padded > 0) await this.flush(padded);
    this.base = alignDown(offset);
    this.fill = offset - this.base;
    this.stages[this.current]!.fill(0, 0, this.fill);
  }

  private async stageZeros(count: number): Promise<void> {
    while (count > 0) {
      const n = Math.min(count, STAGE_BYTES - this.fill);
      this.stages[this.current]!.fill(0, this.fill, this.fill + n);
      this.fill += n;
      count -= n;
      if (this.fill === STAGE_BYTES) await this.flush(STAGE_BYTES);
    }
  }

  /** Starts writing the current stage's first `length` bytes and moves on to the next stage. */
  private async flush(length: number): Promise<void> {
    const stage = this.stages[this.current]!;
    const at = this.base;
    const done = this.writeStage(stage.subarray(0, length), at).catch((err: unknown) => {
      this.failure ??= err;
    });
    this.inFlight[this.current] = done;
    this.base += length;
    this.fill = 0;
    this.current = (this.current + 1) % STAGES;
    // The next stage is free once its own write is done.
    await this.inFlight[this.current];
    this.inFlight[this.current] = undefined;
    this.throwIfFailed();
  }

  private async writeStage(bytes: Uint8Array, at: number): Promise<void> {
    const direct = this.direct;
    if (direct) {
      try {
        await writeAll(direct, bytes, at);
        return;
      } catch (err) {
        if (!isEinval(err)) throw err;
        // The device wants another alignment: the page cache takes everything from here on.
        this.direct = undefined;
        this.wentDirect = false;
        await direct.close().catch(() => undefined);
      }
    }
    await writeAll(this.handle, bytes, at);
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

/**
 * Reads a file or device from byte 0 to its end, into the buffers it is handed: with O_DIRECT
 * while the buffer is aligned memory (the repository's chunking ring) and the position is
 * aligned, else, and for the last partial block, through `handle`. The file is read once either
 * way; a direct read refused with EINVAL moves everything after it to the page cache.
 */
export class SequentialReader {
  private position = 0;

  private constructor(
    private readonly handle: fs.FileHandle,
    private direct: fs.FileHandle | undefined,
  ) {}

  static async open(
    handle: fs.FileHandle,
    options: {
      /** Read through the page cache only (a file that is mostly cached: cachedShare). */
      throughCache?: boolean;
      openDirect?: SequentialWriterOptions['openDirect'];
    } = {},
  ): Promise<SequentialReader> {
    const direct = options.throughCache
      ? undefined
      : await (options.openDirect ?? openDirect)(handle, constants.O_RDONLY);
    return new SequentialReader(handle, direct);
  }

  /** Whether reads may go around the page cache (false once it was refused). */
  get isDirect(): boolean {
    return this.direct !== undefined;
  }

  /** The offset the next read starts at. */
  get offset(): number {
    return this.position;
  }

  /** Reads the next bytes into `into`: how many, 0 at the end. */
  async read(into: Uint8Array): Promise<number> {
    const direct = this.direct;
    const length = alignDown(into.length);
    let n: number | undefined;
    if (direct && length > 0 && this.position % ALIGN === 0 && isAligned(into)) {
      try {
        ({ bytesRead: n } = await direct.read(into, 0, length, this.position));
      } catch (err) {
        if (!isEinval(err)) throw err;
        this.direct = undefined;
        await direct.close().catch(() => undefined);
      }
    }
    n ??= (await this.handle.read(into, 0, into.length, this.position)).bytesRead;
    this.position += n;
    return n;
  }

  /** Closes the direct handle (the caller closes its own). */
  async close(): Promise<void> {
    const direct = this.direct;
    this.direct = undefined;
    await direct?.close();
  }
}

/**
 * The share (0 to 1) of the file at `path` that is in the page cache, by util-linux's `fincore`
 * (mincore(2) over the file), or undefined where that cannot be told. A file the host has just
 * written or read is cheapest to read through the cache; one it has not (a disk image a VM
 * writes with cache=none, a device) is read around it, so a backup does not push out what the
 * host had cached.
 */
export async function cachedShare(path: string): Promise<number | undefined> {
  try {
    const { stdout } = await promisify(execFile)(
      'fincore',
      ['--bytes', '--noheadings', '--raw', '--output', 'RES,SIZE', path],
      { timeout: 10_000 },
    );
    const [resident, size] = stdout.trim().split(/\s+/).map(Number);
    if (!Number.isFinite(resident) || !Number.isFinite(size)) return undefined;
    return size! > 0 ? resident! / size! : 1;
  } catch {
    return undefined;
  }
}
