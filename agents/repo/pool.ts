/**
 * The codec worker pool: one worker thread per core. The main thread reads and chunks; workers
 * hash, seal and open. Tasks are bounded by the callers (the writer keeps a fixed number of
 * chunks in flight), so the pool's queue stays short and memory stays bounded.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';

/**
 * The worker runs as one plain ES module: dist/codec-worker.mjs beside the bundle when this code
 * runs from dist/ (`npm run build`), else bundled from codec-worker.ts on first use (esbuild, a
 * few tens of ms) and cached by content hash. Loading TypeScript in each worker through tsx would
 * cost every worker a loader thread and ~40 MB, which the agent's memory bound cannot afford.
 */
function workerBundle(): string {
  const prebuilt = fileURLToPath(new URL('./codec-worker.mjs', import.meta.url));
  if (existsSync(prebuilt)) return prebuilt;
  const entry = fileURLToPath(new URL('./codec-worker.ts', import.meta.url));
  // Only the sources need esbuild at run time.
  const { buildSync } = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
  const out = buildSync({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['zstd-napi', 'zstd-napi/binding', 'piscina'],
    write: false,
    logLevel: 'silent',
  });
  const code = out.outputFiles[0]!.contents;
  const hash = createHash('sha256').update(code).digest('hex').slice(0, 16);
  // Beside node_modules, so the bundle resolves zstd-napi and piscina from this project.
  const dir = fileURLToPath(new URL('../../node_modules/.cache/stowage/', import.meta.url));
  const file = join(dir, `codec-worker-${hash}.mjs`);
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, code);
    renameSync(tmp, file);
  }
  return file;
}

export interface CodecPool {
  /**
   * Hashes `ring[start, start + length)` and, when `known` (a KnownIds filter's bits) says its id
   * is certainly new, seals it in place too (codec.ts sealInPlace): the result's `frame` is the
   * blob's other 30 bytes and its ciphertext is then `ring[start, start + result.length)`. The
   * span must stay untouched by others until it settles.
   */
  hashSeal(
    ring: SharedArrayBuffer,
    start: number,
    length: number,
    known: Int32Array,
  ): Promise<{ id: string; frame?: Uint8Array; length?: number }>;
  /** Seals `ring[start, start + length)`, whose id is `id`, in place, as hashSeal does. */
  sealRing(
    ring: SharedArrayBuffer,
    start: number,
    length: number,
    id: string,
  ): Promise<{ frame: Uint8Array; length: number }>;
  /** Opens and verifies the blobs of a fetched pack range; the plain chunks share one buffer. */
  openRange(
    data: Uint8Array,
    blobs: Array<{ id: string; offset: number; length: number; rawLength: number }>,
  ): Promise<{ plain?: Uint8Array[]; bad?: number; reason?: string }>;
  /**
   * Like openRange, but writes the plain chunks one after the other into `out` (shared, so
   * nothing is transferred back and the caller re-uses it), which must hold them all. `data` may
   * be a view of a SharedArrayBuffer (then shared, not transferred); it is decrypted in place.
   */
  openRangeInto(
    data: Uint8Array,
    blobs: Array<{ id: string; offset: number; length: number; rawLength: number }>,
    out: SharedArrayBuffer,
  ): Promise<{ bad?: number; reason?: string }>;
  close(): Promise<void>;
}

export function createCodecPool(
  key: Buffer,
  options: { threads?: number; level: number },
): CodecPool {
  // Workers collect their cipher output buffers early (codec-worker.ts); V8 gives new threads
  // a `gc` function once this flag is set.
  setFlagsFromString('--expose-gc');
  const threads = options.threads ?? Math.max(1, availableParallelism());
  const pool = new Piscina({
    filename: workerBundle(),
    minThreads: threads,
    maxThreads: threads,
    idleTimeout: 60_000,
    workerData: { key: new Uint8Array(key), level: options.level },
  });
  const own = (data: Uint8Array) => {
    if (data.byteOffset !== 0 || data.buffer.byteLength !== data.length)
      return new Uint8Array(data);
    return data;
  };
  return {
    hashSeal(ring, start, length, known) {
      return pool.run({ ring, start, length, known }, { name: 'hashSeal' });
    },
    sealRing(ring, start, length, id) {
      return pool.run({ ring, start, length, id }, { name: 'sealRing' });
    },
    openRange(data, blobs) {
      const owned = own(data);
      return pool.run(
        { data: owned, blobs },
        { name: 'openRange', transferList: [owned.buffer as ArrayBuffer] },
      );
    },
    openRangeInto(data, blobs, out) {
      if (data.buffer instanceof SharedArrayBuffer) {
        return pool.run({ data, blobs, out }, { name: 'openRangeInto' });
      }
      const owned = own(data);
      return pool.run(
        { data: owned, blobs, out },
        { name: 'openRangeInto', transferList: [owned.buffer as ArrayBuffer] },
      );
    },
    close: () => pool.destroy(),
  };
}
