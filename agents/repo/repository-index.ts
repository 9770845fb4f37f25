/**
 * The repository index in memory: chunk id → where its sealed blob is. Loaded from every pack's
 * index object when a repository opens, and extended as the writer uploads packs. A chunk is in
 * the index only once its pack and the pack's index are both stored, so a chunk found here is
 * safe to skip: this is what makes an interrupted job's retry cheap.
 */
import type { ObjectStore } from '../store/store';
import { getBuffer } from '../store/store';
import { INDEX_PREFIX, indexKey, packIdOfIndexKey } from '../../kernel/object-layout';
import { openJson, sealJson } from './codec';
import type { BlobLocation } from './types';

/** A pack's index object: its blobs in pack order. */
export interface PackIndex {
  version: 1;
  pack: string;
  blobs: Array<{ id: string; offset: number; length: number; rawLength: number }>;
}

const PURPOSE = 'index';
const LOAD_CONCURRENCY = 8;

export class RepositoryIndex {
  private readonly blobs = new Map<string, BlobLocation>();
  private readonly packs = new Set<string>();

  get size(): number {
    return this.blobs.size;
  }

  has(id: string): boolean {
    return this.blobs.has(id);
  }

  /** Every chunk id in the index. */
  ids(): IterableIterator<string> {
    return this.blobs.keys();
  }

  get(id: string): BlobLocation | undefined {
    return this.blobs.get(id);
  }

  add(index: PackIndex): void {
    this.packs.add(index.pack);
    for (const b of index.blobs) {
      if (!this.blobs.has(b.id)) {
        this.blobs.set(b.id, {
          pack: index.pack,
          offset: b.offset,
          length: b.length,
          rawLength: b.rawLength,
        });
      }
    }
  }

  /** Loads every pack index in the store. */
  static async load(store: ObjectStore, key: Buffer): Promise<RepositoryIndex> {
    const index = new RepositoryIndex();
    await index.refresh(store, key);
    return index;
  }

  /** Loads the indexes of packs not known yet (stored by other writers since the last load). */
  async refresh(store: ObjectStore, key: Buffer): Promise<void> {
    const keys: string[] = [];
    for await (const info of store.list(INDEX_PREFIX)) {
      if (!this.packs.has(packIdOfIndexKey(info.key))) keys.push(info.key);
    }
    let next = 0;
    const worker = async () => {
      while (next < keys.length) {
        const k = keys[next++]!;
        const parsed = openJson<PackIndex>(await getBuffer(store, k), key, PURPOSE);
        if (parsed.pack !== packIdOfIndexKey(k)) {
          throw new Error(`index object ${k} describes pack ${parsed.pack}`);
        }
        this.add(parsed);
      }
    };
    await Promise.all(Array.from({ length: Math.min(LOAD_CONCURRENCY, keys.length) }, worker));
  }

  static async write(store: ObjectStore, key: Buffer, pack: PackIndex): Promise<void> {
    await store.put(indexKey(pack.pack), sealJson(pack, key, PURPOSE));
  }
}
