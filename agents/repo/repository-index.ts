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
  /** Every pack index loaded, by pack: what garbage collection reads and `blobs` is built from. */
  private readonly packs = new Map<string, PackIndex>();
  private readonly bad = new Map<string, string>();
  /**
   * Packs a garbage-collection mark found unreferenced (gc.ts): they stay readable, but a writer
   * must not skip a chunk because one of them holds it, since the sweep may delete them.
   */
  private condemned: ReadonlySet<string> = new Set();

  get size(): number {
    return this.blobs.size;
  }

  has(id: string): boolean {
    return this.blobs.has(id);
  }

  /**
   * Whether a writer may rely on the chunk being stored: it is indexed in a pack that no
   * garbage-collection mark condemns.
   */
  usable(id: string): boolean {
    const loc = this.blobs.get(id);
    return loc !== undefined && !this.condemned.has(loc.pack);
  }

  /** Every chunk id in the index. */
  ids(): IterableIterator<string> {
    return this.blobs.keys();
  }

  /** The pack indexes loaded, by pack id. */
  packIndexes(): ReadonlyMap<string, PackIndex> {
    return this.packs;
  }

  /** The index objects skipped as bad, with why: key → reason. */
  get skipped(): ReadonlyMap<string, string> {
    return this.bad;
  }

  get(id: string): BlobLocation | undefined {
    return this.blobs.get(id);
  }

  add(index: PackIndex): void {
    this.packs.set(index.pack, index);
    const better = !this.condemned.has(index.pack);
    for (const b of index.blobs) {
      const known = this.blobs.get(b.id);
      // A chunk stored twice is read from a pack no mark condemns, when there is one.
      if (!known || (better && this.condemned.has(known.pack))) {
        this.blobs.set(b.id, {
          pack: index.pack,
          offset: b.offset,
          length: b.length,
          rawLength: b.rawLength,
        });
      }
    }
  }

  /** Condemns these packs (replacing the last set) and re-points chunks stored elsewhere too. */
  setCondemned(packs: ReadonlySet<string>): void {
    const same =
      packs.size === this.condemned.size && [...packs].every((p) => this.condemned.has(p));
    if (same) return;
    this.condemned = packs;
    this.rebuild();
  }

  private rebuild(): void {
    this.blobs.clear();
    const all = [...this.packs.values()];
    this.packs.clear();
    for (const index of all) this.add(index);
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
    // Only packs known before the listing began can be missing from it: one added meanwhile (a
    // writer of this process stored it) may simply be newer than the listing.
    const before = new Set(this.packs.keys());
    const keys: string[] = [];
    const listed = new Set<string>();
    for await (const info of store.list(INDEX_PREFIX)) {
      if (this.bad.has(info.key)) continue;
      const pack = packIdOfIndexKey(info.key);
      listed.add(pack);
      if (!this.packs.has(pack)) keys.push(info.key);
    }
    // A pack whose index is gone was garbage-collected (gc.ts deletes the index first): its
    // chunks are no longer stored, so they must not be skipped or read from it.
    const gone = [...before].filter((p) => !listed.has(p));
    if (gone.length > 0) {
      for (const p of gone) this.packs.delete(p);
      this.rebuild();
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

  /** Stores a pack's index; resolves its stored size. */
  static async write(store: ObjectStore, key: Buffer, pack: PackIndex): Promise<number> {
    const sealed = sealJson(pack, key, PURPOSE);
    await store.put(indexKey(pack.pack), sealed);
    return sealed.length;
  }
}
