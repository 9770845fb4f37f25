/**
 * The repository index in memory: chunk id → where its sealed blob is. Loaded from every pack's
 * index object when a repository opens, and extended as the writer uploads packs. A chunk is in
 * the index only once its pack and the pack's index are both stored, so a chunk found here is
 * safe to skip: this is what makes an interrupted job's retry cheap.
 *
 * Anyone who can write to the store can put an object under `index/` (no key is needed to write
 * junk, or to copy a valid index under another pack's name). Such an object must not block the
 * repository: one that cannot be opened with the data key, is not a pack index, or describes
 * another pack than its name says is skipped and reported once (`onBad`), and the chunks it
 * claims are simply not known here (a backup stores them again; a point that needs them fails
 * its verify). Store errors other than a vanished object still fail the load: they say nothing
 * about the object.
 */
import type { ObjectStore } from '../store/store';
import { getBuffer, ObjectNotFound } from '../store/store';
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
const HEX = /^[0-9a-f]+$/;

/** Called once per index object that was skipped, with why. */
export type BadIndexReport = (key: string, reason: string) => void;

/** The pack index in `sealed`, stored under `key`; throws (with the reason) if it is not one. */
function openPackIndex(sealed: Uint8Array, key: string, dataKey: Buffer): PackIndex {
  let parsed: PackIndex;
  try {
    parsed = openJson<PackIndex>(sealed, dataKey, PURPOSE);
  } catch (err) {
    throw new Error(`it cannot be opened with the repository's key (${(err as Error).message})`);
  }
  const named = packIdOfIndexKey(key);
  if (parsed === null || typeof parsed !== 'object' || parsed.version !== 1) {
    throw new Error('it is not a pack index (no version 1)');
  }
  if (parsed.pack !== named) {
    throw new Error(`it describes pack ${String(parsed.pack)}, not ${named}`);
  }
  const blobs: unknown = parsed.blobs;
  const valid =
    Array.isArray(blobs) &&
    blobs.every(
      (b: PackIndex['blobs'][number]) =>
        typeof b?.id === 'string' &&
        HEX.test(b.id) &&
        [b.offset, b.length, b.rawLength].every((n) => Number.isSafeInteger(n) && n >= 0),
    );
  if (!valid) throw new Error('its blob list is malformed');
  return parsed;
}

export class RepositoryIndex {
  private readonly blobs = new Map<string, BlobLocation>();
  private readonly packs = new Set<string>();
  private readonly bad = new Map<string, string>();

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

  /** The index objects skipped as bad, with why: key → reason. */
  get skipped(): ReadonlyMap<string, string> {
    return this.bad;
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
  static async load(
    store: ObjectStore,
    key: Buffer,
    onBad?: BadIndexReport,
  ): Promise<RepositoryIndex> {
    const index = new RepositoryIndex();
    await index.refresh(store, key, onBad);
    return index;
  }

  /**
   * Loads the indexes of packs not known yet (stored by other writers since the last load).
   * Bad index objects are skipped and reported through `onBad` the first time they are seen.
   */
  async refresh(store: ObjectStore, key: Buffer, onBad?: BadIndexReport): Promise<void> {
    const keys: string[] = [];
    for await (const info of store.list(INDEX_PREFIX)) {
      if (this.bad.has(info.key)) continue;
      if (!this.packs.has(packIdOfIndexKey(info.key))) keys.push(info.key);
    }
    let next = 0;
    const worker = async () => {
      while (next < keys.length) {
        const k = keys[next++]!;
        let sealed: Uint8Array;
        try {
          sealed = await getBuffer(store, k);
        } catch (err) {
          if (err instanceof ObjectNotFound) continue; // deleted since the listing
          throw err;
        }
        let parsed: PackIndex;
        try {
          parsed = openPackIndex(sealed, k, key);
        } catch (err) {
          const reason = (err as Error).message;
          this.bad.set(k, reason);
          onBad?.(k, reason);
          continue;
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
