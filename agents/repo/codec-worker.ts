/**
 * The work the data path spreads over worker threads: hashing chunks, sealing new ones and
 * opening stored ones. The writer's chunks are read in place from its shared ring (chunk-ring.ts);
 * other buffers travel by transfer, never by copy. The data key arrives once, as workerData, not
 * with each task.
 */
import { createHash } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { move, transferableSymbol, valueSymbol, workerData } from 'piscina';
import { isAllZero } from './chunker';
import { idBytes, openBlobInto, sealInPlace, sha256Hex } from './codec';
import { mightContain } from './known-ids';
import { IntegrityError } from '../../kernel/errors';

const { key, level } = workerData as { key: Uint8Array; level: number };
const dataKey = Buffer.from(key);

/**
 * Codec workers run at a lower priority (nice +WORKER_NICE) than the thread that reads and cuts
 * the chunks they work on: with one worker per core, all of them compete for the cores, and a
 * feeder that gets preempted leaves the workers without work a moment later. Measured on 2 cores
 * (2 GiB, bench/): backups ~5 % faster, restores ~3 %. It also lets the host's own workloads come
 * first. Linux names a thread by its id in /proc/thread-self; elsewhere, or if refused, nothing
 * changes.
 */
const WORKER_NICE = 5;
try {
  const threadId = Number(readlinkSync('/proc/thread-self').split('/').pop());
  setPriority(threadId, Math.min(19, getPriority(threadId) + WORKER_NICE));
} catch {
  // the workers keep the feeder's priority
}

/**
 * AES-GCM in Node always allocates its output (codec.ts slices it to 256 KiB), and V8 frees such
 * buffers only when a GC runs, which its external-memory heuristic delays until ~64 MB of them
 * pile up in each thread. A young-generation GC (a millisecond or so) every COLLECT_EVERY bytes
 * keeps that garbage to a few MB; pool.ts exposes `gc` to the workers for this.
 */
const COLLECT_EVERY = 8 * 1024 * 1024;
let sinceCollect = 0;
const collect = (globalThis as { gc?: (options: { type: 'minor' }) => void }).gc;

function processed(bytes: number): void {
  sinceCollect += bytes;
  if (sinceCollect < COLLECT_EVERY || !collect) return;
  sinceCollect = 0;
  collect({ type: 'minor' });
}

/** Wraps a result whose buffers are to be transferred back rather than cloned. */
function moving<T extends object>(value: T, buffers: ArrayBufferLike[]) {
  return move({
    get [transferableSymbol]() {
      return buffers;
    },
    get [valueSymbol]() {
      return value;
    },
  } as never);
}

/** A chunk in the writer's shared ring. */
interface RingChunk {
  ring: SharedArrayBuffer;
  start: number;
  length: number;
}

/**
 * SHA-256 digests of all-zero chunks, by length: sparse disk regions give many maxSize chunks of
 * zeros, and checking for zeros runs ~3× faster than hashing them.
 */
const zeroDigests = new Map<number, Buffer>();

function digestOf(data: Uint8Array): Buffer {
  if (data.length >= 4096 && isAllZero(data)) {
    let d = zeroDigests.get(data.length);
    if (!d) {
      d = createHash('sha256').update(data).digest();
      if (zeroDigests.size < 64) zeroDigests.set(data.length, d);
    }
    return d;
  }
  return createHash('sha256').update(data).digest();
}

/**
 * Hashes a chunk of the ring and, when `known` (a KnownIds filter) says the id is certainly new,
 * seals it in place too (codec.ts sealInPlace: the ciphertext replaces the chunk in the ring and
 * only the frame's 30 other bytes travel back). The caller decides whether a sealed blob is kept.
 */
export function hashSeal({ ring, start, length, known }: RingChunk & { known: Int32Array }) {
  const data = new Uint8Array(ring, start, length);
  const digest = digestOf(data);
  const id = digest.toString('hex');
  if (mightContain(known, digest)) return { id };
  processed(length);
  return { id, ...sealInPlace(data, dataKey, digest, level) };
}

/** Seals a chunk of the ring in place, its id known (hashSeal's filter had a false positive). */
export function sealRing({ ring, start, length, id }: RingChunk & { id: string }) {
  return sealInPlace(new Uint8Array(ring, start, length), dataKey, idBytes(id), level);
}

type RangeBlob = { id: string; offset: number; length: number; rawLength: number };

/**
 * Opens the blobs of one fetched pack range into `out`, one after the other, and checks each plain
 * chunk's SHA-256 against its id. Answers the index of the first bad blob and why, if any.
 */
function openBlobs(data: Uint8Array, blobs: RangeBlob[], out: Uint8Array) {
  processed(data.length);
  let at = 0;
  for (let i = 0; i < blobs.length; i++) {
    const blob = blobs[i]!;
    const chunk = out.subarray(at, at + blob.rawLength);
    try {
      openBlobInto(
        data.subarray(blob.offset, blob.offset + blob.length),
        dataKey,
        idBytes(blob.id),
        chunk,
      );
    } catch (err) {
      return { bad: i, reason: (err as Error).message };
    }
    if (sha256Hex(chunk) !== blob.id) {
      return {
        bad: i,
        reason: new IntegrityError('content does not match its SHA-256 id').message,
      };
    }
    at += blob.rawLength;
  }
  return {};
}

/**
 * Opens one fetched pack range and returns the plain chunks in order (or the index of the first
 * bad one). The chunks are views of one buffer of the range's plain length, transferred back
 * whole: one allocation per range.
 */
export function openRange({ data, blobs }: { data: Uint8Array; blobs: RangeBlob[] }) {
  const out = Buffer.allocUnsafeSlow(blobs.reduce((n, b) => n + b.rawLength, 0));
  const result = openBlobs(data, blobs, out);
  if (result.bad !== undefined) return result;
  const plain: Uint8Array[] = [];
  let at = 0;
  for (const blob of blobs) {
    plain.push(out.subarray(at, at + blob.rawLength));
    at += blob.rawLength;
  }
  return moving({ plain }, [out.buffer]);
}

/** Opens one fetched pack range into the caller's shared buffer (see CodecPool.openRangeInto). */
export function openRangeInto({
  data,
  blobs,
  out,
}: {
  data: Uint8Array;
  blobs: RangeBlob[];
  out: SharedArrayBuffer;
}) {
  return openBlobs(data, blobs, new Uint8Array(out));
}
