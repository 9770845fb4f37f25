/**
 * A Stowage repository in an object store: content-defined chunks, deduplicated by SHA-256,
 * compressed, encrypted and packed into objects of ~16 MiB, with sealed manifests per recovery
 * point. See types.ts for the vocabulary and kernel/object-layout.ts for the keys.
 *
 * Writing: the calling thread copies each read once into a shared ring (chunk-ring.ts) and cuts
 * chunks there; worker threads hash every chunk in place and, when a Bloom filter of the known ids
 * (known-ids.ts) says it is new, seal it in the same task, writing the ciphertext over the chunk in
 * the ring. The calling thread checks each id against the exact index and its pending set, copies
 * a new chunk's sealed blob into the current pack's buffer and drops a duplicate; the ring span is
 * released, in order, once that is done. A packer uploads full packs, then their index, and only
 * then counts their chunks as stored. Memory: the ring, at most PACK_UPLOADS + 1 pack buffers and
 * MAX_CHUNKS_IN_FLIGHT small task results, whatever the stream size.
 *
 * Reading: consecutive chunks of one pack are fetched as one ranged GET, PREFETCH_RANGES ahead;
 * workers open each blob and check its SHA-256 against its id; a missing or altered chunk fails
 * the read with an IntegrityError that names the stream and the offset. Nothing unverified is
 * ever handed on.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ByteReader, ChunkWrite } from '../core/driver';
import type { ObjectStore } from '../store/store';
import { getBuffer, getInto, ObjectExists, ObjectNotFound } from '../store/store';
import { CONFIG_KEY, manifestKey, packKey, packListKey } from '../../kernel/object-layout';
import { IntegrityError } from '../../kernel/errors';
import { CHUNKER_VERSION } from './chunker';
import { ALIGN, alignedBuffer } from '../core/direct-io';
import { copyBytes } from '../core/shared-copy';
import { YoungCollector } from '../core/young-gc';
import { ChunkRing, type Span } from './chunk-ring';
import {
  DEFAULT_COMPRESSION_LEVEL,
  FRAME_HEAD,
  openJson,
  SEAL_OVERHEAD,
  sealJson,
  sha256Hex,
} from './codec';
import type { KeyProvider } from './keys';
import { KnownIds } from './known-ids';
import { createCodecPool, type CodecPool } from './pool';
import { RepositoryIndex, type BadIndexReport, type PackIndex } from './repository-index';
import { loadMarks } from './gc-marks';
import {
  DEFAULT_CHUNKING,
  type ChunkingParams,
  type ChunkRef,
  type StreamRecord,
  type WriteStats,
} from './types';

/** Sealed packs are cut at this size: few enough objects for a 1 TB disk (~60 k), small enough to hold two in memory. */
export const PACK_TARGET_BYTES = 16 * 1024 * 1024;
const PACK_UPLOADS = 2;
/** Chunks being hashed or sealed at once: keeps both cores busy (their bytes stay in the ring). */
const MAX_CHUNKS_IN_FLIGHT = 8;
/**
 * The writer's chunking ring (chunk-ring.ts): room for the chunks in flight (~1 MiB each on
 * average), the one being cut (up to maxSize) and the next read; at least 4 × maxSize.
 */
const RING_BYTES = 16 * 1024 * 1024;
/** `writeFrom` asks for at most this much per read, so chunks are cut and dispatched as it goes. */
const READ_BYTES = 2 * 1024 * 1024;
/**
 * Tree streams (RepositoryWriter.treeData): files of at most SMALL_FILE_MAX bytes are gathered
 * into shared chunks of about BATCH_BYTES (at most BATCH_FILES files), so a tree of a million
 * small files is a few hundred chunks, not a million blobs to hash, seal, pack and index. A
 * batch stays under the chunker's maxSize (4 MiB: DEFAULT_CHUNKING, every repository's), so it
 * is always one chunk.
 */
export const SMALL_FILE_MAX = 64 * 1024;
const BATCH_BYTES = 1024 * 1024;
const BATCH_FILES = 1024;
/**
 * Restore reads this many ranges ahead, each at most 8 MiB stored and 8 MiB plain (16 MiB cost
 * ~40 MB more RSS, no speed).
 */
const PREFETCH_RANGES = 4;
const MAX_RANGE_BYTES = 8 * 1024 * 1024;
/**
 * A lean read (ReadOptions): one range of at most 1 MiB ahead, so reading a tree's index beside
 * a backup or a restore costs a few MiB, not the ~64 MiB of a fast stream read.
 */
const LEAN_PREFETCH = 1;
const LEAN_RANGE_BYTES = 1024 * 1024;

export interface ReadOptions {
  /** Read with little memory (LEAN_PREFETCH): for an index read alongside other work. */
  lean?: boolean;
}

export interface RepositoryConfig {
  version: 1;
  repositoryId: string;
  chunker: { version: number; params: ChunkingParams };
  createdAt: string;
}

export interface OpenOptions {
  store: ObjectStore;
  keys: KeyProvider;
  /** Worker threads; default one per core. */
  workers?: number;
  compressionLevel?: number;
  /** Told once about each bad object under `index/`, which is skipped (repository-index.ts). */
  onBadIndex?: BadIndexReport;
}

export class Repository {
  private constructor(
    readonly store: ObjectStore,
    readonly config: RepositoryConfig,
    private readonly key: Buffer,
    readonly index: RepositoryIndex,
    private readonly pool: CodecPool,
    private readonly onBadIndex?: BadIndexReport,
  ) {
    this.zeroChunk = new ZeroChunk(config.chunker.params.maxSize);
  }

  private readonly zeroChunk: ZeroChunk;

  static async open(options: OpenOptions): Promise<Repository> {
    const key = await options.keys.dataKey();
    const config = await loadOrCreateConfig(options.store, key, options.keys);
    const index = await RepositoryIndex.load(options.store, key, options.onBadIndex);
    const pool = createCodecPool(key, {
      level: options.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL,
      ...(options.workers ? { threads: options.workers } : {}),
    });
    return new Repository(options.store, config, key, index, pool, options.onBadIndex);
  }

  writer(): RepositoryWriter {
    return new RepositoryWriter(
      this.store,
      this.key,
      this.index,
      this.pool,
      this.config.chunker.params,
    );
  }

  /**
   * The stream's bytes, verified chunk by chunk. `context` prefixes error messages (e.g. the
   * recovery point) so a failure names everything needed to find the damage.
   */
  readStream(
    record: StreamRecord,
    onBytes: (n: number) => void = () => undefined,
    context = '',
    options: ReadOptions = {},
  ): Readable {
    return Readable.from(this.readChunks(record, onBytes, context, options), {
      objectMode: false,
    });
  }

  /** Reads and verifies every chunk of a stream without keeping the bytes. */
  async verifyStream(
    record: StreamRecord,
    onBytes: (n: number) => void = () => undefined,
    context = '',
  ): Promise<void> {
    // Each chunk is checked against its id as it is opened; nothing is kept.
    await this.forEachChunk(record, () => Promise.resolve(), onBytes, context);
  }

  /**
   * Stores the ids of the packs that hold these streams' chunks (as this repository's index knows
   * them now), one a line, under a key of its own for this attempt; returns the key. Pack ids
   * are random names any listing of the store shows; the list says which a point uses, nothing
   * of what they hold. commit-point checks it against the store's indexes (it cannot open
   * sealed objects). All-zero chunks, known from their id alone, are in no pack.
   */
  async savePackList(
    recoveryPointId: string,
    streams: ReadonlyArray<{ chunks: ReadonlyArray<{ id: string }> }>,
  ): Promise<string> {
    const packs = new Set<string>();
    for (const stream of streams) {
      for (const chunk of stream.chunks) {
        const location = this.index.get(chunk.id);
        if (location) packs.add(location.pack);
      }
    }
    const key = packListKey(recoveryPointId, randomBytes(8).toString('hex'));
    await this.store.put(key, Buffer.from([...packs].sort().join('\n')));
    return key;
  }

  async saveManifest<T extends object>(recoveryPointId: string, manifest: T): Promise<string> {
    const key = manifestKey(recoveryPointId);
    await this.store.put(key, sealJson(manifest, this.key, `manifest:${recoveryPointId}`));
    return key;
  }

  async loadManifest<T>(recoveryPointId: string): Promise<T> {
    const sealed = await getBuffer(this.store, manifestKey(recoveryPointId));
    try {
      return openJson<T>(sealed, this.key, `manifest:${recoveryPointId}`);
    } catch (err) {
      throw new IntegrityError(
        `the manifest of recovery point ${recoveryPointId} cannot be opened: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }

  /**
   * Loads the indexes of packs other writers stored since this repository was opened, forgets
   * packs garbage collection deleted, and reads the garbage-collection marks: a writer that
   * refreshed after a mark was written never relies on the packs it condemns (gc.ts).
   */
  async refresh(): Promise<void> {
    const marks = await loadMarks(this.store, this.key, this.onBadIndex);
    await this.index.refresh(this.store, this.key, this.onBadIndex);
    this.index.setCondemned(new Set(marks.flatMap((m) => m.candidates)));
  }

  /**
   * Garbage collection's repack (gc.ts): copies these blobs, as they are, into new packs of at
   * most PACK_TARGET_BYTES, each stored before its index, as a writer stores them. A blob is
   * sealed with its chunk id as associated data, not its place, so it moves unchanged; each is
   * opened and checked against its id first, and a damaged one stops the copy (IntegrityError)
   * rather than be carried on. The new indexes join this repository's index. Returns them and
   * the bytes stored (packs and indexes).
   */
  async copyBlobs(
    sources: ReadonlyArray<{ pack: string; blobs: PackIndex['blobs'] }>,
  ): Promise<{ packs: PackIndex[]; bytes: number }> {
    const written: PackIndex[] = [];
    let bytes = 0;
    let body: Buffer[] = [];
    let blobs: PackIndex['blobs'] = [];
    let size = 0;
    const store = async () => {
      if (blobs.length === 0) return;
      const packId = randomBytes(32).toString('hex');
      await this.store.put(packKey(packId), Buffer.concat(body, size));
      const index: PackIndex = { version: 1, pack: packId, blobs };
      const indexBytes = await RepositoryIndex.write(this.store, this.key, index);
      this.index.add(index);
      written.push(index);
      bytes += size + indexBytes;
      body = [];
      blobs = [];
      size = 0;
    };
    for (const source of sources) {
      const sorted = [...source.blobs].sort((a, b) => a.offset - b.offset);
      // Runs of blobs stored back to back, fetched as one ranged read of at most MAX_RANGE_BYTES.
      for (let i = 0; i < sorted.length;) {
        let j = i + 1;
        let end = sorted[i]!.offset + sorted[i]!.length;
        while (
          j < sorted.length &&
          sorted[j]!.offset === end &&
          end + sorted[j]!.length - sorted[i]!.offset <= MAX_RANGE_BYTES
        ) {
          end += sorted[j]!.length;
          j++;
        }
        const start = sorted[i]!.offset;
        const run = sorted.slice(i, j);
        const data = await getBuffer(this.store, packKey(source.pack), {
          offset: start,
          length: end - start,
        });
        const relative = run.map((b) => ({ ...b, offset: b.offset - start }));
        const checked = await this.pool.openRange(new Uint8Array(data), relative);
        if (checked.bad !== undefined) {
          throw new IntegrityError(
            `repack stopped: chunk ${run[checked.bad]!.id} in pack ${source.pack} is damaged (${checked.reason ?? 'unreadable'}); run stowage verify on the points that use it`,
          );
        }
        for (const b of relative) {
          if (size > 0 && size + b.length > PACK_TARGET_BYTES) await store();
          body.push(data.subarray(b.offset, b.offset + b.length));
          blobs.push({ id: b.id, offset: size, length: b.length, rawLength: b.rawLength });
          size += b.length;
        }
        i = j;
      }
    }
    await store();
    return { packs: written, bytes };
  }

  /** Seals a small JSON object with the data key (`purpose` binds it to its use). */
  seal(value: unknown, purpose: string): Buffer {
    return sealJson(value, this.key, purpose);
  }

  /** Opens what `seal` made; throws IntegrityError if it was not sealed for `purpose`. */
  open<T>(sealed: Uint8Array, purpose: string): T {
    return openJson<T>(sealed, this.key, purpose);
  }

  /** The objects under `index/` skipped as bad, each with why (`index/<x>: reason`). */
  badIndexes(): string[] {
    return [...this.index.skipped].map(([key, reason]) => `${key}: ${reason}`).sort();
  }

  /**
   * Hands a stream to `write` in verified pieces (a fetched range of chunks, or one all-zero
   * chunk), the fastest way back for a consumer that writes at offsets (a file, a device), one
   * piece at a time while the next ranges are fetched and opened (more writes at once only made
   * ext4's inode lock spin). A piece's bytes are valid until its `write` resolves; their buffer is
   * then re-used, so memory stays at a few range buffers whatever the stream size. `zero` says a piece is all zeros (known from the chunk's id
   * alone, without a fetch), so a new file may keep a hole there.
   */
  async forEachChunk(
    record: StreamRecord,
    write: ChunkWrite,
    onBytes: (n: number) => void = () => undefined,
    context = '',
  ): Promise<void> {
    const integrity = integrityOf(record, context);
    const steps = planRanges(record, this.index, integrity, this.zeroChunk);
    const slotBytes = Math.max(MAX_RANGE_BYTES, ...record.chunks.map((c) => c.length));
    const inputBytes = Math.max(MAX_RANGE_BYTES, ...steps.map((s) => ('pack' in s ? s.length : 0)));
    // Plain pieces (out) and fetched ranges (in) live in shared buffers that are re-used: no
    // per-range allocation for either thread to collect.
    const freeSlots: SharedArrayBuffer[] = [];
    const freeInputs: SharedArrayBuffer[] = [];
    const fetchInto = async (step: PlannedRange) => {
      const slot = freeSlots.pop() ?? new SharedArrayBuffer(slotBytes);
      const input = freeInputs.pop() ?? new SharedArrayBuffer(inputBytes);
      const data = new Uint8Array(input, 0, step.length);
      await this.fetchRange(step, integrity, data);
      const out = await this.pool.openRangeInto(data, step.blobs, slot);
      freeInputs.push(input);
      if (out.bad !== undefined) throw badChunk(step, out.bad, out.reason, integrity);
      return { slot, length: step.blobs.reduce((n, b) => n + b.rawLength, 0) };
    };
    let size = 0;
    for await (const { step, result: fetched } of prefetched(steps, (step) =>
      'pack' in step ? fetchInto(step) : undefined,
    )) {
      const length = fetched ? fetched.length : step.length;
      const bytes = fetched
        ? new Uint8Array(fetched.slot, 0, length)
        : this.zeroChunk.bytes.subarray(0, length);
      await write(bytes, size, !fetched);
      if (fetched) freeSlots.push(fetched.slot);
      onBytes(length);
      size += length;
    }
    if (size !== record.size)
      throw integrity(size, `stream ends at ${size} bytes, ${record.size} recorded`);
  }

  /** A range of a pack, into `into` when given (its exact length), else a new buffer. */
  private async fetchRange(
    range: PlannedRange,
    integrity: (offset: number, why: string, cause?: unknown) => IntegrityError,
    into?: Uint8Array,
  ): Promise<Buffer> {
    const where = { offset: range.offset, length: range.length };
    try {
      if (!into) return await getBuffer(this.store, packKey(range.pack), where);
      await getInto(this.store, packKey(range.pack), where, into);
      return Buffer.from(into.buffer, into.byteOffset, into.length);
    } catch (err) {
      throw integrity(
        range.streamOffset,
        `pack ${range.pack} cannot be read: ${(err as Error).message}`,
        err,
      );
    }
  }

  private async *readChunks(
    record: StreamRecord,
    onBytes: (n: number) => void,
    context: string,
    options: ReadOptions,
  ): AsyncGenerator<Buffer> {
    const integrity = integrityOf(record, context);
    const lean = options.lean === true;
    const steps = planRanges(
      record,
      this.index,
      integrity,
      this.zeroChunk,
      lean ? LEAN_RANGE_BYTES : MAX_RANGE_BYTES,
    );
    const open = async (step: PlannedRange) => {
      const data = await this.fetchRange(step, integrity);
      const out = await this.pool.openRange(data, step.blobs);
      if (out.bad !== undefined) throw badChunk(step, out.bad, out.reason, integrity);
      return out.plain!;
    };
    let size = 0;
    for await (const { step, result: plain } of prefetched(
      steps,
      (step) => ('pack' in step ? open(step) : undefined),
      lean ? LEAN_PREFETCH : PREFETCH_RANGES,
    )) {
      // A zero chunk's bytes are shared and never written: readers of a Readable do not modify
      // what they are given.
      const chunks = plain ?? [this.zeroChunk.bytes.subarray(0, step.length)];
      for (const chunk of chunks) {
        size += chunk.length;
        onBytes(chunk.length);
        yield Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      }
    }
    if (size !== record.size)
      throw integrity(size, `stream ends at ${size} bytes, ${record.size} recorded`);
  }
}

/**
 * Runs `start` for each step in order, with at most `ahead` fetches (steps for which `start`
 * returns a promise) under way beyond the one being consumed, and yields each step with its
 * result, in order (`undefined` where `start` has nothing to do). Steps without a fetch (all-zero
 * chunks) take no place in the window: a disk's long zero runs do not stall the fetches after
 * them. A failure surfaces when its step's turn comes; those started after it are left to settle
 * unobserved.
 */
async function* prefetched<S, T>(
  steps: readonly S[],
  start: (step: S) => Promise<T> | undefined,
  ahead = PREFETCH_RANGES,
): AsyncGenerator<{ step: S; result: T | undefined }> {
  const started: Array<Promise<T> | undefined> = [];
  let next = 0;
  let pending = 0; // fetches started and not yet consumed
  for (let i = 0; i < steps.length; i++) {
    while (next < steps.length && (next <= i || pending < ahead)) {
      const promise = start(steps[next++]!);
      if (promise) {
        promise.catch(() => undefined); // observed when its turn comes
        pending++;
      }
      started.push(promise);
    }
    const promise = started[i];
    started[i] = undefined;
    if (promise) pending--;
    yield { step: steps[i]!, result: await promise };
  }
}

function integrityOf(record: StreamRecord, context: string) {
  return (offset: number, why: string, cause?: unknown) =>
    new IntegrityError(
      `${context}stream ${record.name}, offset ${offset}: ${why}`,
      cause ? { cause } : undefined,
    );
}

function badChunk(
  range: PlannedRange,
  bad: number,
  reason: string | undefined,
  integrity: (offset: number, why: string) => IntegrityError,
): IntegrityError {
  const offset =
    range.streamOffset + range.blobs.slice(0, bad).reduce((n, b) => n + b.rawLength, 0);
  return integrity(offset, `chunk ${range.blobs[bad]!.id}: ${reason ?? 'unreadable'}`);
}

/**
 * The all-zero chunk of the chunker's maxSize: sparse regions of disks come out of the chunker
 * as runs of exactly such chunks (chunker.ts), and a chunk whose id is the SHA-256 of maxSize
 * zeros holds nothing else, so a restore writes zeros (or leaves a hole) without fetching it.
 */
class ZeroChunk {
  readonly id: string;
  private zeros?: Buffer;

  constructor(readonly length: number) {
    this.id = sha256Hex(new Uint8Array(length));
  }

  get bytes(): Buffer {
    return (this.zeros ??= Buffer.alloc(this.length));
  }
}

interface PlannedRange {
  pack: string;
  offset: number;
  length: number;
  streamOffset: number;
  blobs: Array<{ id: string; offset: number; length: number; rawLength: number }>;
}

/** A chunk of zeros, written without a fetch (ZeroChunk). */
interface ZeroStep {
  streamOffset: number;
  length: number;
}

/**
 * Groups consecutive chunks of the stream that lie close together in one pack into one ranged
 * read: the range spans at most `maxRange` stored bytes and (but for a single larger chunk) holds
 * as many plain; all-zero chunks become steps of their own. The chunks need not be back to back
 * nor in stream order inside the pack: a writer's codec threads finish chunks out of order, so a
 * pack holds a stream's chunks shuffled within a few places, and reading them one range each
 * cost a restore ~850 reads and worker round trips for 1.5 GiB instead of ~150. The bytes between
 * them (other chunks) are read and not used.
 */
function planRanges(
  record: StreamRecord,
  index: RepositoryIndex,
  integrity: (offset: number, why: string) => IntegrityError,
  zero: ZeroChunk,
  maxRange = MAX_RANGE_BYTES,
): Array<PlannedRange | ZeroStep> {
  const steps: Array<PlannedRange | ZeroStep> = [];
  let streamOffset = 0;
  let current: PlannedRange | undefined;
  // The current range's blobs at their offsets in the pack, and its span there.
  let placed: Array<{ at: number; blob: PlannedRange['blobs'][number] }> = [];
  let start = 0;
  let end = 0;
  let plain = 0;
  const close = () => {
    if (!current) return;
    current.offset = start;
    current.length = end - start;
    for (const { at, blob } of placed) blob.offset = at - start;
    current = undefined;
  };
  for (const chunk of record.chunks) {
    if (chunk.id === zero.id && chunk.length === zero.length) {
      close();
      steps.push({ streamOffset, length: chunk.length });
      streamOffset += chunk.length;
      continue;
    }
    const loc = index.get(chunk.id);
    if (!loc) throw integrity(streamOffset, `chunk ${chunk.id} is not in the repository`);
    if (loc.rawLength !== chunk.length) {
      throw integrity(
        streamOffset,
        `chunk ${chunk.id} is ${loc.rawLength} bytes in the index, ${chunk.length} in the manifest`,
      );
    }
    const joins =
      current !== undefined &&
      current.pack === loc.pack &&
      Math.max(end, loc.offset + loc.length) - Math.min(start, loc.offset) <= maxRange &&
      plain + loc.rawLength <= maxRange;
    if (!joins) {
      close();
      current = { pack: loc.pack, offset: 0, length: 0, streamOffset, blobs: [] };
      placed = [];
      start = loc.offset;
      end = loc.offset;
      plain = 0;
      steps.push(current);
    }
    const blob = { id: chunk.id, offset: 0, length: loc.length, rawLength: loc.rawLength };
    current!.blobs.push(blob);
    placed.push({ at: loc.offset, blob });
    start = Math.min(start, loc.offset);
    end = Math.max(end, loc.offset + loc.length);
    plain += loc.rawLength;
    streamOffset += chunk.length;
  }
  close();
  return steps;
}

async function loadOrCreateConfig(
  store: ObjectStore,
  key: Buffer,
  keys: KeyProvider,
): Promise<RepositoryConfig> {
  try {
    const sealed = await getBuffer(store, CONFIG_KEY);
    try {
      return openJson<RepositoryConfig>(sealed, key, 'config');
    } catch (err) {
      if (!(err instanceof IntegrityError)) throw err;
      throw new IntegrityError(
        `${keys.describe()} does not open this repository (its config fails authentication); use the key the repository was created with`,
        { cause: err },
      );
    }
  } catch (err) {
    if (!(err instanceof ObjectNotFound)) throw err;
  }
  const config: RepositoryConfig = {
    version: 1,
    repositoryId: randomUUID(),
    chunker: { version: CHUNKER_VERSION, params: DEFAULT_CHUNKING },
    createdAt: new Date().toISOString(),
  };
  try {
    await store.put(CONFIG_KEY, sealJson(config, key, 'config'));
  } catch (err) {
    // Another agent created the repository at the same moment: its config is the repository's.
    if (err instanceof ObjectExists) return loadOrCreateConfig(store, key, keys);
    throw err;
  }
  return config;
}

/**
 * Writes streams into the repository. Call `flush` once after the last stream: until then the
 * last pack may still be in memory. Not safe for concurrent writeStream calls.
 */
export class RepositoryWriter {
  readonly stats: WriteStats = {
    bytesRead: 0,
    bytesNew: 0,
    bytesStored: 0,
    chunks: 0,
    newChunks: 0,
  };
  /** Chunks sealed in this writer but not yet stored with their pack's index. */
  private readonly pending = new Set<string>();
  /** A superset of index ∪ pending as the workers see it (known-ids.ts). */
  private readonly known: KnownIds;
  private ring: ChunkRing | undefined;
  /** The pack being filled: sealed blobs are copied into one preallocated buffer. */
  private pack: { blobs: PackIndex['blobs']; body: Buffer | undefined; size: number } = {
    blobs: [],
    body: undefined,
    size: 0,
  };
  /** Pack buffers whose upload has finished, for reuse (at most PACK_UPLOADS + 1 exist). */
  private readonly freeBodies: Buffer[] = [];
  /** Packs whose body is being stored (their index may be stored after: it holds no buffer). */
  private bodiesUploading = 0;
  private readonly bodyWaiters: Array<() => void> = [];
  private readonly uploads = new Set<Promise<void>>();
  private uploadError: unknown;

  constructor(
    private readonly store: ObjectStore,
    private readonly key: Buffer,
    private readonly index: RepositoryIndex,
    private readonly pool: CodecPool,
    private readonly params: ChunkingParams,
  ) {
    const pending = this.pending;
    this.known = new KnownIds(function* () {
      yield* index.ids();
      yield* pending;
    });
  }

  /** The largest chunk this repository's chunker cuts (a `TreeData.block` may be this long). */
  get maxChunkBytes(): number {
    return this.params.maxSize;
  }

  /**
   * Stores a stream given as pieces: each is copied into the chunking ring once. The pieces are
   * mostly a socket's (an engine's export, an image): short-lived Buffers that would otherwise
   * keep V8 marking its old generation (core/young-gc.ts).
   */
  writeStream(
    info: { name: string; kind: string },
    source: AsyncIterable<Buffer | Uint8Array>,
    onBytes: (n: number) => void = () => undefined,
  ): Promise<StreamRecord> {
    return this.writeChunks(info, async (ring, makeRoom) => {
      let size = 0;
      let young: YoungCollector | undefined;
      for await (const piece of source) {
        const buf = piece as Uint8Array;
        size += buf.length;
        this.stats.bytesRead += buf.length;
        onBytes(buf.length);
        (young ??= new YoungCollector()).taken(buf.length);
        // The piece is copied into the ring before the next one is asked for.
        for (let offset = 0; offset < buf.length;) {
          const n = ring.write(buf, offset);
          offset += n;
          await makeRoom(n === 0);
        }
      }
      return size;
    });
  }

  /**
   * Stores a stream that `read` fills in, straight into the chunking ring: files and devices
   * skip the read buffer and its copy. `read` resolves the bytes it wrote, 0 at the end. The
   * next read is under way while the bytes of the last one are cut into chunks, and the space
   * offered is aligned (core/direct-io.ts), so a file may be read with O_DIRECT.
   */
  writeFrom(
    info: { name: string; kind: string },
    read: ByteReader,
    onBytes: (n: number) => void = () => undefined,
  ): Promise<StreamRecord> {
    return this.writeChunks(info, (ring, makeRoom) => this.fillFrom(ring, read, makeRoom, onBytes));
  }

  /**
   * A tree's data stream (core/tree/backup.ts), written file by file: each file is cut into
   * chunks of its own (a chunk never spans two files), and the next file is read while the
   * last one's chunks are still being hashed and sealed, so a tree of many files keeps the
   * workers as busy as one big file does. Call `end` once (or `abandon` on failure) before the
   * writer stores another stream.
   */
  treeData(onBytes: (n: number) => void = () => undefined): TreeData {
    const ring = this.freshRing();
    const flow = new ChunkFlow(
      ring,
      (span) => this.storeChunk(ring, span),
      () => this.throwIfUploadFailed(),
    );
    // The batch of small files being gathered: it becomes the chunk at `chunk` when it is cut,
    // since nothing else is added to the chunk list while it is open.
    let batch: { chunk: number; bytes: number; files: number } | undefined;
    const closeBatch = async () => {
      if (!batch) return;
      batch = undefined;
      await flow.cutWhole();
    };
    return {
      file: async (read) => {
        await closeBatch();
        const first = flow.refs.length;
        await this.fillFrom(ring, read, (full) => flow.makeRoom(full), onBytes);
        await flow.dispatch(true);
        return [first, flow.refs.length - first];
      },
      block: async (read) => {
        await closeBatch();
        const first = flow.refs.length;
        // Never cut while filling (only wait for room): the block is one chunk, not scanned.
        const n = await this.fillFrom(
          ring,
          read,
          (full) => (full ? flow.makeRoom(true) : Promise.resolve()),
          onBytes,
        );
        if (n > this.params.maxSize) {
          throw new RangeError(`a block of ${n} bytes is larger than a chunk may be`);
        }
        await flow.cutWhole();
        return [first, flow.refs.length - first];
      },
      small: async (read) => {
        batch ??= { chunk: flow.refs.length, bytes: 0, files: 0 };
        const at = { chunk: batch.chunk, skip: batch.bytes };
        // Below maxSize in all (BATCH_BYTES + SMALL_FILE_MAX), so makeRoom never cuts the batch.
        const n = await this.fillFrom(ring, read, (full) => flow.makeRoom(full), onBytes);
        if (n > SMALL_FILE_MAX) throw new Error(`a small file gave ${n} bytes`);
        batch.bytes += n;
        batch.files++;
        if (batch.bytes >= BATCH_BYTES || batch.files >= BATCH_FILES) await closeBatch();
        return at;
      },
      reuse: async (refs) => {
        await closeBatch();
        const first = flow.refs.length;
        for (const ref of refs) flow.refs.push(ref);
        return [first, refs.length];
      },
      end: async () => {
        await closeBatch();
        await flow.drain();
        return flow.refs;
      },
      abandon: () => flow.abandon(),
    };
  }

  /** Reads `read` into the ring until it returns 0, cutting as it goes; resolves the size. */
  private async fillFrom(
    ring: ChunkRing,
    read: ByteReader,
    makeRoom: (full: boolean) => Promise<void>,
    onBytes: (n: number) => void,
  ): Promise<number> {
    let size = 0;
    let reading: Promise<number> | undefined;
    const startRead = () => {
      const space = ring.space(READ_BYTES);
      if (space) reading = read(space);
      return reading !== undefined;
    };
    try {
      for (;;) {
        if (!reading && !startRead()) {
          await makeRoom(true);
          continue;
        }
        const n = await reading!;
        reading = undefined;
        ring.commit(n);
        if (n === 0) return size;
        size += n;
        this.stats.bytesRead += n;
        onBytes(n);
        startRead();
        await makeRoom(false);
      }
    } finally {
      // A failure while a read is under way: let it finish before the ring is reused.
      await reading?.catch(() => 0);
    }
  }

  private freshRing(): ChunkRing {
    const ring = (this.ring ??= new ChunkRing(
      Math.max(RING_BYTES, 4 * this.params.maxSize + ALIGN),
      this.params,
      ALIGN,
    ));
    ring.reset();
    return ring;
  }

  /**
   * The chunking loop both sources share: `fill` puts the stream's bytes into the ring and calls
   * `makeRoom(full)` after each write, which cuts and dispatches the chunks the bytes complete
   * and, when the ring is `full`, waits for the oldest chunk in flight to free its span.
   */
  private async writeChunks(
    info: { name: string; kind: string },
    fill: (ring: ChunkRing, makeRoom: (full: boolean) => Promise<void>) => Promise<number>,
  ): Promise<StreamRecord> {
    const ring = this.freshRing();
    const flow = new ChunkFlow(
      ring,
      (span) => this.storeChunk(ring, span),
      () => this.throwIfUploadFailed(),
    );
    let size: number;
    try {
      size = await fill(ring, (full) => flow.makeRoom(full));
      await flow.dispatch(true);
      await flow.drain();
    } catch (err) {
      // Let the chunks already cut reach their pack, so flush() stores them for the retry.
      await flow.abandon();
      throw err;
    }
    return { name: info.name, kind: info.kind, size, chunks: flow.refs };
  }

  /**
   * Whether the chunk is stored (and not condemned by garbage collection) or being stored by
   * this writer: a chunk a backup may reference without its bytes (a tree's unchanged file).
   */
  has(id: string): boolean {
    return this.index.usable(id) || this.pending.has(id);
  }

  /** Stores the last partial pack and waits for every upload; then lets go of the buffers. */
  async flush(): Promise<void> {
    if (this.pack.blobs.length > 0) this.startUpload();
    while (this.uploads.size > 0) await Promise.race(this.uploads);
    this.freeBodies.length = 0;
    this.ring = undefined;
    this.throwIfUploadFailed();
  }

  private async storeChunk(ring: ChunkRing, span: Span): Promise<ChunkRef> {
    const length = span.end - span.start;
    const hashed = await this.pool.hashSeal(ring.buffer, span.start, length, this.known.shared);
    const id = hashed.id;
    this.stats.chunks++;
    // A blob sealed for a chunk the repository has (or another task is storing) is dropped.
    if (this.index.usable(id) || this.pending.has(id)) return { id, length };
    this.pending.add(id);
    this.known.add(id);
    const sealed =
      hashed.frame && hashed.length !== undefined
        ? { frame: hashed.frame, length: hashed.length }
        : await this.pool.sealRing(ring.buffer, span.start, length, id);
    this.stats.newChunks++;
    this.stats.bytesNew += length;
    await this.addToPack(id, ring.bytes(span.start, sealed.length), sealed.frame, length);
    return { id, length };
  }

  /**
   * Copies a sealed blob into the current pack. A full pack waits here for an upload slot, so a
   * pack never outgrows its buffer (PACK_TARGET_BYTES + one sealed maxSize chunk).
   */
  private async addToPack(
    id: string,
    ciphertext: Uint8Array,
    frame: Uint8Array,
    rawLength: number,
  ): Promise<void> {
    for (;;) {
      this.throwIfUploadFailed();
      if (this.pack.size < PACK_TARGET_BYTES) break;
      if (this.bodiesUploading < PACK_UPLOADS) {
        this.startUpload();
        break;
      }
      await new Promise<void>((resolve) => this.bodyWaiters.push(resolve));
    }
    const pack = this.pack;
    // Page-aligned, so a directory store writes it with O_DIRECT as it is (core/direct-io.ts).
    pack.body ??=
      this.freeBodies.pop() ??
      alignedBuffer(PACK_TARGET_BYTES + this.params.maxSize + SEAL_OVERHEAD);
    const length = frame.length + ciphertext.length;
    pack.body.set(frame.subarray(0, FRAME_HEAD), pack.size);
    // From the shared ring: without V8's byte-by-byte copy (core/shared-copy.ts).
    copyBytes(pack.body, pack.size + FRAME_HEAD, ciphertext);
    pack.body.set(frame.subarray(FRAME_HEAD), pack.size + FRAME_HEAD + ciphertext.length);
    pack.blobs.push({ id, offset: pack.size, length, rawLength });
    pack.size += length;
    if (pack.size >= PACK_TARGET_BYTES && this.bodiesUploading < PACK_UPLOADS) this.startUpload();
  }

  private startUpload(): void {
    const { blobs, body, size } = this.pack;
    this.pack = { blobs: [], body: undefined, size: 0 };
    const packId = randomBytes(32).toString('hex');
    this.bodiesUploading++;
    const upload = (async () => {
      try {
        await this.store.put(packKey(packId), body!.subarray(0, size));
      } finally {
        // The store is done with the body once put settles (store.ts), whatever the outcome;
        // the next pack may be stored while this one's index is.
        this.bodiesUploading--;
        this.freeBodies.push(body!);
        for (const wake of this.bodyWaiters.splice(0)) wake();
      }
      const packIndex: PackIndex = { version: 1, pack: packId, blobs };
      await RepositoryIndex.write(this.store, this.key, packIndex);
      this.index.add(packIndex);
      for (const b of blobs) this.pending.delete(b.id);
      this.stats.bytesStored += size;
    })().catch((err: unknown) => {
      this.uploadError ??= err;
    });
    const tracked: Promise<void> = upload.finally(() => this.uploads.delete(tracked));
    this.uploads.add(tracked);
  }

  private throwIfUploadFailed(): void {
    if (this.uploadError) throw this.uploadError;
  }
}

/** See RepositoryWriter.treeData. */
export interface TreeData {
  /**
   * Adds one file's bytes (`read` until it returns 0) as chunks of their own; resolves their
   * span `[first, count]` in the stream's chunk list once they are cut, before they are stored.
   */
  file(read: ByteReader): Promise<[number, number]>;
  /**
   * Adds `read`'s bytes, at most the chunker's maxSize, as one chunk, cut where it ends and not
   * scanned for content-defined cut points (a fixed-size block of a VM disk, as Proxmox Backup
   * Server cuts VM images): its span in the chunk list (no chunk when it is empty).
   */
  block(read: ByteReader): Promise<[number, number]>;
  /**
   * Adds a file of at most SMALL_FILE_MAX bytes to the batch of small files being gathered into
   * one chunk (cut at BATCH_BYTES or BATCH_FILES, or when anything else is added): the chunk's
   * place in the chunk list and the bytes of it before this file's.
   */
  small(read: ByteReader): Promise<{ chunk: number; skip: number }>;
  /** Adds chunks stored before (an unchanged file's): their span in the chunk list. */
  reuse(chunks: readonly ChunkRef[]): Promise<[number, number]>;
  /** Waits for every chunk to be hashed (and sealed into a pack if new): the chunk list. */
  end(): Promise<ChunkRef[]>;
  /** After a failure: lets the chunks already cut reach their pack, so a retry finds them. */
  abandon(): Promise<void>;
}

/**
 * Cuts the ring's bytes into chunks and keeps at most MAX_CHUNKS_IN_FLIGHT of them being
 * stored. `refs` is the chunk list in stream order: a chunk's place is taken when it is cut and
 * filled in when it settles. Chunks settle in order, so the oldest in flight is the ring's
 * oldest held span.
 */
class ChunkFlow {
  readonly refs: ChunkRef[] = [];
  private readonly inFlight: Array<Promise<void>> = [];

  constructor(
    private readonly ring: ChunkRing,
    private readonly store: (span: Span) => Promise<ChunkRef>,
    private readonly check: () => void,
  ) {}

  private async settleOldest(): Promise<void> {
    await this.inFlight.shift();
    this.ring.release();
  }

  /** Cuts the chunks the ring's bytes complete (all of them when `final`) and stores them. */
  async dispatch(final: boolean): Promise<void> {
    for (let span = this.ring.next(final); span; span = this.ring.next(final)) {
      await this.add(span);
    }
  }

  /** Cuts all the ring's unchunked bytes as one chunk (a batch of small files). */
  async cutWhole(): Promise<void> {
    const span = this.ring.nextWhole();
    if (span) await this.add(span);
  }

  private async add(span: Span): Promise<void> {
    this.check();
    const at = this.refs.length;
    this.refs.push(PENDING_REF);
    const stored = this.store(span).then((ref) => {
      this.refs[at] = ref;
    });
    stored.catch(() => undefined); // observed when it is settled
    this.inFlight.push(stored);
    if (this.inFlight.length >= MAX_CHUNKS_IN_FLIGHT) await this.settleOldest();
  }

  /** After a write: cuts what it completed, or, when the ring is `full`, frees its oldest span. */
  makeRoom(full: boolean): Promise<void> {
    return full ? this.settleOldest() : this.dispatch(false);
  }

  async drain(): Promise<void> {
    while (this.inFlight.length > 0) await this.settleOldest();
  }

  async abandon(): Promise<void> {
    await Promise.allSettled(this.inFlight.splice(0));
  }
}

const PENDING_REF: ChunkRef = Object.freeze({ id: '', length: 0 });

export function openRepository(options: OpenOptions): Promise<Repository> {
  return Repository.open(options);
}
