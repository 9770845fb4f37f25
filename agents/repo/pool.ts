/**
 * The codec worker pool: one worker thread per core. The main thread reads and chunks; workers
 * hash, seal and open. Tasks are bounded by the callers (the writer keeps a fixed number of
 * chunks in flight), so the pool's queue stays short and memory stays bounded.
 */
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';

export interface CodecPool {
  hash(data: Uint8Array): Promise<{ id: string; data: Uint8Array }>;
  seal(id: string, data: Uint8Array): Promise<Uint8Array>;
  openRange(
    data: Uint8Array,
    blobs: Array<{ id: string; offset: number; length: number }>,
  ): Promise<{ plain?: Uint8Array[]; bad?: number; reason?: string }>;
  close(): Promise<void>;
}

export function createCodecPool(
  key: Buffer,
  options: { threads?: number; level: number },
): CodecPool {
  const threads = options.threads ?? Math.max(1, availableParallelism());
  const pool = new Piscina({
    filename: new URL('./codec-worker.mjs', import.meta.url).href,
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
    hash(data) {
      const owned = own(data);
      return pool.run(
        { data: owned },
        { name: 'hash', transferList: [owned.buffer as ArrayBuffer] },
      );
    },
    async seal(id, data) {
      const owned = own(data);
      const out = (await pool.run(
        { id, data: owned },
        { name: 'seal', transferList: [owned.buffer as ArrayBuffer] },
      )) as {
        sealed: Uint8Array;
      };
      return out.sealed;
    },
    openRange(data, blobs) {
      const owned = own(data);
      return pool.run(
        { data: owned, blobs },
        { name: 'openRange', transferList: [owned.buffer as ArrayBuffer] },
      );
    },
    close: () => pool.destroy(),
  };
}
