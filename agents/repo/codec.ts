/**
 * Sealing: how every byte the repository stores is framed. A sealed blob is
 *
 *   version (1) | flags (1) | nonce (12) | AES-256-GCM ciphertext | tag (16)
 *
 * with flags bit 0 = the plaintext was zstd-compressed before encryption. The version, the
 * flags and the caller's `aad` (a chunk's id, or a purpose like `config`) are authenticated, so a
 * blob moved to another id, or a flag flipped, fails to open instead of yielding other bytes.
 * Chunks that do not shrink by at least 1/32 are stored uncompressed (random data, media); the
 * data path (sealInPlace) skips compressing large chunks whose samples do not shrink at all.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { Compressor, Decompressor } from 'zstd-napi';
import { createRequire } from 'node:module';
import { IntegrityError } from '../../kernel/errors';
import { copyBytes } from '../core/shared-copy';

export const BLOB_VERSION = 1;
const FLAG_ZSTD = 1;
const HEADER = 2;
const NONCE = 12;
const TAG = 16;
/** Bytes a sealed blob adds to its (possibly compressed) plaintext. */
export const SEAL_OVERHEAD = HEADER + NONCE + TAG;

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * zstd level 3 (~500 MB/s a core here). The workers wait on the chunking thread anyway, so level 1
 * (~850 MB/s) saves no wall time; level 3 stores ~1 % less on disk-image data (bench/). Chunks are
 * always compressed: zstd gives up quickly on incompressible input, and chunks that do not shrink
 * by 1/32 are stored as they are.
 */
export const DEFAULT_COMPRESSION_LEVEL = 3;

// One compression context per level and thread: creating one per call costs ~40 % of throughput.
const compressors = new Map<number, Compressor>();
let decompressor: Decompressor | undefined;

function compressor(level: number): Compressor {
  let c = compressors.get(level);
  if (!c) {
    c = new Compressor();
    c.setParameters({ compressionLevel: level });
    compressors.set(level, c);
  }
  return c;
}

function shrinks(original: number, packed: number): boolean {
  return packed < original - (original >> 5);
}

export function sealBlob(
  plain: Uint8Array,
  key: Buffer,
  aad: Uint8Array,
  level = DEFAULT_COMPRESSION_LEVEL,
): Buffer {
  let body: Uint8Array = plain;
  let flags = 0;
  if (level > 0 && plain.length > 0) {
    const packed = compressor(level).compress(plain);
    if (shrinks(plain.length, packed.length)) {
      body = packed;
      flags |= FLAG_ZSTD;
    }
  }
  const out = Buffer.allocUnsafe(SEAL_OVERHEAD + body.length);
  out[0] = BLOB_VERSION;
  out[1] = flags;
  const nonce = randomBytes(NONCE);
  nonce.copy(out, HEADER);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.concat([out.subarray(0, HEADER), aad]));
  const written = cipher.update(body).copy(out, HEADER + NONCE);
  const final = cipher.final();
  final.copy(out, HEADER + NONCE + written);
  cipher.getAuthTag().copy(out, out.length - TAG);
  return out;
}

/** The bytes of a sealed blob around its ciphertext: version, flags and nonce, then the tag. */
export const FRAME_HEAD = HEADER + NONCE;

/**
 * zstd-napi's native binding, for ZSTD_compress2 into a caller's buffer (Compressor.compress
 * allocates a compressBound-sized buffer per call). A CommonJS module without static exports.
 */
const zstd = createRequire(import.meta.url)(
  'zstd-napi/binding',
) as typeof import('zstd-napi/binding');

/** One compression context per level and thread, writing into this thread's scratch buffer. */
const contexts = new Map<number, InstanceType<typeof zstd.CCtx>>();
let scratch: Buffer | undefined;
/**
 * AES-GCM output comes in slices of this size. Node allocates each slice's output zero-filled:
 * at 64 KiB it comes from malloc's heap, warm in cache, where 256 KiB slices took fresh pages
 * each time (page faults and the fill were ~10 % of the codec workers' samples in `perf`; sealing
 * 1 GiB in a microbench: 0.37-0.43 CPU-s against 0.53-0.60, 32 KiB 0.45, 16 KiB 0.56).
 */
const CIPHER_SLICE = 64 * 1024;

/** A large chunk is probed with a sample of PROBE_BYTES every PROBE_STRIDE bytes. */
const PROBE_BYTES = 8 * 1024;
const PROBE_STRIDE = 128 * 1024;
let probeContext: InstanceType<typeof zstd.CCtx> | undefined;

/**
 * Whether no sample of a chunk of at least 256 KiB shrinks at zstd level 1: then the chunk is
 * random-looking (encrypted or already compressed data, media) and is stored as it is without a
 * whole compression pass (zstd -3 runs ~2 GB/s over such data; the samples are 1/16 of it at
 * level 1). One sample that shrinks is enough to compress the whole chunk, so any compressible run
 * longer than PROBE_STRIDE + PROBE_BYTES is found.
 */
function looksIncompressible(plain: Uint8Array, scratch: Buffer): boolean {
  if (plain.length < 2 * PROBE_STRIDE) return false;
  if (!probeContext) {
    probeContext = new zstd.CCtx();
    probeContext.setParameter(zstd.CParameter.compressionLevel, 1);
  }
  for (let at = 0; at + PROBE_BYTES <= plain.length; at += PROBE_STRIDE) {
    const sample = plain.subarray(at, at + PROBE_BYTES);
    if (shrinks(PROBE_BYTES, probeContext.compress2(scratch, sample))) return false;
  }
  return true;
}

/**
 * Seals `plain` exactly as sealBlob does, without allocating the blob: the ciphertext (never
 * longer than the plaintext) is written over `plain` itself, and the rest of the frame is returned
 * as `frame` (FRAME_HEAD bytes of version, flags and nonce, then the TAG). The sealed blob is
 * `frame[0, FRAME_HEAD) | plain[0, length) | frame[FRAME_HEAD, …)`. The plaintext is gone after.
 */
export function sealInPlace(
  plain: Uint8Array,
  key: Buffer,
  aad: Uint8Array,
  level = DEFAULT_COMPRESSION_LEVEL,
): { frame: Uint8Array; length: number } {
  let body: Uint8Array = plain;
  let flags = 0;
  if (level > 0 && plain.length > 0) {
    let cctx = contexts.get(level);
    if (!cctx) {
      cctx = new zstd.CCtx();
      cctx.setParameter(zstd.CParameter.compressionLevel, level);
      contexts.set(level, cctx);
    }
    const bound = zstd.compressBound(plain.length);
    if (!scratch || scratch.length < bound) scratch = Buffer.allocUnsafeSlow(bound);
    const packed = looksIncompressible(plain, scratch)
      ? plain.length
      : cctx.compress2(scratch, plain);
    if (shrinks(plain.length, packed)) {
      body = scratch.subarray(0, packed);
      flags |= FLAG_ZSTD;
    }
  }
  const frame = new Uint8Array(SEAL_OVERHEAD);
  frame[0] = BLOB_VERSION;
  frame[1] = flags;
  const nonce = randomBytes(NONCE);
  frame.set(nonce, HEADER);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.concat([frame.subarray(0, HEADER), aad]));
  // GCM is a stream mode: each slice's ciphertext is as long as the slice, and once encrypted a
  // slice of the plaintext is not read again, so writing over it in place is safe. `plain` is
  // mostly a span of the writer's shared ring that starts anywhere: copyBytes keeps V8 off its
  // byte-by-byte copy into shared memory (core/shared-copy.ts).
  let written = 0;
  for (let i = 0; i < body.length; i += CIPHER_SLICE) {
    const out = cipher.update(body.subarray(i, Math.min(body.length, i + CIPHER_SLICE)));
    copyBytes(plain, written, out);
    written += out.length;
  }
  const final = cipher.final();
  copyBytes(plain, written, final);
  written += final.length;
  frame.set(cipher.getAuthTag(), FRAME_HEAD);
  return { frame, length: written };
}

/** Opens a sealed blob; IntegrityError when it was altered, or sealed for other `aad` or key. */
export function openBlob(sealed: Uint8Array, key: Buffer, aad: Uint8Array): Buffer {
  if (sealed.length < SEAL_OVERHEAD || sealed[0] !== BLOB_VERSION) {
    throw new IntegrityError(`not a sealed blob of version ${BLOB_VERSION}`);
  }
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length);
  const flags = buf[1]!;
  const decipher = createDecipheriv('aes-256-gcm', key, buf.subarray(HEADER, HEADER + NONCE));
  decipher.setAAD(Buffer.concat([buf.subarray(0, HEADER), aad]));
  decipher.setAuthTag(buf.subarray(buf.length - TAG));
  let body: Buffer;
  try {
    body = Buffer.concat([
      decipher.update(buf.subarray(HEADER + NONCE, buf.length - TAG)),
      decipher.final(),
    ]);
  } catch (err) {
    throw new IntegrityError('sealed blob fails authentication (altered, or another key)', {
      cause: err,
    });
  }
  if (!(flags & FLAG_ZSTD)) return body;
  decompressor ??= new Decompressor();
  return decompressor.decompress(body);
}

/**
 * Opens a sealed blob straight into `out`, which must be exactly its plain length, like openBlob
 * (IntegrityError when it was altered, sealed for other `aad` or key, or is not `out`'s length).
 * `sealed` is altered (a compressed blob is decrypted over its own ciphertext). When it throws,
 * `out` may hold unverified bytes: the caller must drop it (the data path fails the whole range).
 */
export function openBlobInto(
  sealed: Uint8Array,
  key: Buffer,
  aad: Uint8Array,
  out: Uint8Array,
): void {
  if (sealed.length < SEAL_OVERHEAD || sealed[0] !== BLOB_VERSION) {
    throw new IntegrityError(`not a sealed blob of version ${BLOB_VERSION}`);
  }
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length);
  const flags = buf[1]!;
  const decipher = createDecipheriv('aes-256-gcm', key, buf.subarray(HEADER, HEADER + NONCE));
  decipher.setAAD(Buffer.concat([buf.subarray(0, HEADER), aad]));
  decipher.setAuthTag(buf.subarray(buf.length - TAG));
  const body = buf.subarray(HEADER + NONCE, buf.length - TAG);
  const compressed = (flags & FLAG_ZSTD) !== 0;
  if (!compressed && body.length !== out.length)
    throw new IntegrityError(`blob holds ${body.length} bytes, not ${out.length}`);
  // A stored chunk is decrypted straight into `out`; a compressed one over its own ciphertext,
  // then decompressed into `out`.
  const plainTo = compressed ? body : out;
  try {
    let written = 0;
    for (let i = 0; i < body.length; i += CIPHER_SLICE) {
      const plain = decipher.update(body.subarray(i, Math.min(body.length, i + CIPHER_SLICE)));
      // `plainTo` is shared memory (a restore's range or slot): copyBytes, not V8's byte path.
      copyBytes(plainTo, written, plain);
      written += plain.length;
    }
    plainTo.set(decipher.final(), written);
  } catch (err) {
    throw new IntegrityError('sealed blob fails authentication (altered, or another key)', {
      cause: err,
    });
  }
  if (!compressed) return;
  dctx ??= new zstd.DCtx();
  let n: number;
  try {
    n = dctx.decompress(out, body);
  } catch (err) {
    throw new IntegrityError(`blob does not decompress to ${out.length} bytes`, { cause: err });
  }
  if (n !== out.length) throw new IntegrityError(`blob holds ${n} bytes, not ${out.length}`);
}

let dctx: InstanceType<typeof zstd.DCtx> | undefined;

/** The id of a chunk is the SHA-256 of its plain bytes; as AAD it binds a blob to its id. */
export function idBytes(id: string): Buffer {
  return Buffer.from(id, 'hex');
}

/** Seals a JSON document (config, index, manifest) for a purpose. */
export function sealJson(value: unknown, key: Buffer, purpose: string): Buffer {
  return sealBlob(Buffer.from(JSON.stringify(value)), key, Buffer.from(purpose), 3);
}

export function openJson<T>(sealed: Uint8Array, key: Buffer, purpose: string): T {
  return JSON.parse(openBlob(sealed, key, Buffer.from(purpose)).toString('utf8')) as T;
}
