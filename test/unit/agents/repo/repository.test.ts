import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chunkStream } from '../../../../agents/repo/chunker';
import { sha256Hex } from '../../../../agents/repo/codec';
import { LocalKeyFile, StaticKey, type KeyProvider } from '../../../../agents/repo/keys';
import { Repository } from '../../../../agents/repo/repository';
import { DEFAULT_CHUNKING, type StreamRecord } from '../../../../agents/repo/types';
import { ObjectNotFound } from '../../../../agents/store/store';
import { manifestKey, packKey, PACKS_PREFIX } from '../../../../kernel/object-layout';
import { IntegrityError } from '../../../../kernel/errors';
import { drain, MiB, mixedData, prngBytes, readAll, readsOf } from '../../../fixtures/data';
import { MemoryStore } from '../../../fixtures/memory-store';

const { maxSize } = DEFAULT_CHUNKING;

/** Repositories opened by one test, closed after it: each holds two worker threads. */
const opened: Repository[] = [];

async function openRepo(
  store: MemoryStore,
  keys: KeyProvider = new StaticKey(randomBytes(32)),
): Promise<Repository> {
  const repo = await Repository.open({ store, keys, workers: 2 });
  opened.push(repo);
  return repo;
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((repo) => repo.close()));
});

/**
 * A repository shared by the tests of one describe block (opening one starts two worker threads),
 * opened before them and closed after them.
 */
function sharedRepository(keys: KeyProvider = new StaticKey(randomBytes(32))) {
  const shared = { store: new MemoryStore(), keys, repo: undefined as unknown as Repository };
  beforeAll(async () => {
    shared.repo = await Repository.open({ store: shared.store, keys, workers: 2 });
  });
  afterAll(async () => {
    await shared.repo.close();
  });
  return shared;
}

/** One backup: writes one stream with a fresh writer and flushes it. */
async function backup(repo: Repository, data: Uint8Array, name = 'disk') {
  const writer = repo.writer();
  const record = await writer.writeStream({ name, kind: 'disk' }, readsOf(data));
  await writer.flush();
  return { record, stats: { ...writer.stats } };
}

const packKeys = (store: MemoryStore) => store.keys().filter((k) => k.startsWith(PACKS_PREFIX));

/** Each chunk of a record with the stream range it covers. */
function chunkRanges(record: StreamRecord) {
  let offset = 0;
  return record.chunks.map((chunk) => {
    const range = { ...chunk, start: offset, end: offset + chunk.length };
    offset = range.end;
    return range;
  });
}

/** The offset an IntegrityError's message names (`…, offset N: …`). */
const offsetIn = (err: unknown) => Number(/offset (\d+)/.exec((err as Error).message)?.[1]);

describe('writing and reading a stream', () => {
  const shared = sharedRepository();

  it.each([
    ['an empty stream', 0, () => Buffer.alloc(0)],
    ['a 1-byte stream', 1, () => Buffer.from([7])],
    ['3 MiB of random bytes', 3 * MiB, () => prngBytes(3 * MiB, 3)],
    ['40 MiB of random, zero and text runs', 40 * MiB, () => mixedData(40 * MiB, 40)],
  ])('gives back %s byte for byte', async (_what, size, make) => {
    const data = make();

    const { record } = await backup(shared.repo, data);
    const read = await readAll(shared.repo.readStream(record));

    expect(record.size).toBe(size);
    expect(record.chunks.reduce((n, c) => n + c.length, 0)).toBe(size);
    expect(read.length).toBe(size);
    expect(read.equals(data)).toBe(true);
  });

  it('gives back every byte whatever size the source reads are', async () => {
    const data = mixedData(6 * MiB, 6);
    const writer = shared.repo.writer();

    const record = await writer.writeStream({ name: 'odd', kind: 'disk' }, readsOf(data, 4093));
    await writer.flush();

    expect((await readAll(shared.repo.readStream(record))).equals(data)).toBe(true);
  });

  it('reports every byte it reads and writes through onBytes', async () => {
    const data = mixedData(5 * MiB, 5);
    let written = 0;
    let verified = 0;

    const writer = shared.repo.writer();
    const record = await writer.writeStream({ name: 'disk', kind: 'disk' }, readsOf(data), (n) => {
      written += n;
    });
    await writer.flush();
    await shared.repo.verifyStream(record, (n) => {
      verified += n;
    });

    expect(written).toBe(data.length);
    expect(verified).toBe(data.length);
    expect(writer.stats.bytesRead).toBe(data.length);
  });
});

describe('writing from a reader and reading chunk by chunk', () => {
  const shared = sharedRepository();

  /** A ByteReader over `data` that fills at most `most` bytes of each buffer it is given. */
  const readerOf = (data: Uint8Array, most = Infinity) => {
    let at = 0;
    return (into: Uint8Array) => {
      const n = Math.min(into.length, most, data.length - at);
      into.set(data.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    };
  };

  it('cuts the same chunks from a reader as from a stream of the same bytes', async () => {
    const data = mixedData(24 * MiB, 24);
    const writer = shared.repo.writer();

    const fromStream = await writer.writeStream({ name: 'a', kind: 'disk' }, readsOf(data));
    const fromReader = await writer.writeFrom({ name: 'b', kind: 'disk' }, readerOf(data, 777_777));
    await writer.flush();

    expect(fromReader.size).toBe(data.length);
    expect(fromReader.chunks).toEqual(fromStream.chunks);
    expect((await readAll(shared.repo.readStream(fromReader))).equals(data)).toBe(true);
  });

  it('hands the stream over in pieces at their offsets, marks the all-zero ones, and re-uses its buffers', async () => {
    const data = mixedData(30 * MiB, 31);
    data.fill(0, 8 * MiB, 8 * MiB + 3 * maxSize); // at least two whole maxSize chunks of zeros
    const { record } = await backup(shared.repo, data);
    const copy = Buffer.alloc(data.length, 0xff);
    const buffers = new Set<ArrayBufferLike>();
    let zeros = 0;

    await shared.repo.forEachChunk(record, async (bytes, offset, zero) => {
      if (zero) {
        zeros++;
        expect(bytes.every((b) => b === 0)).toBe(true);
      }
      buffers.add(bytes.buffer);
      copy.set(bytes, offset);
      await new Promise((resolve) => setImmediate(resolve));
    });

    expect(copy.equals(data)).toBe(true);
    expect(zeros).toBeGreaterThanOrEqual(2);
    // At most the prefetched ranges' buffers, those being written, and the zero chunk's.
    expect(buffers.size).toBeLessThanOrEqual(7);
  });

  it('reads chunks that a pack holds out of stream order in a few ranged reads, not one each', async () => {
    // Ranged reads of packs, counted.
    class CountingStore extends MemoryStore {
      ranged = 0;
      override get(key: string, range?: { offset: number; length: number }) {
        if (range && key.startsWith(PACKS_PREFIX)) this.ranged++;
        return super.get(key, range);
      }
    }
    const store = new CountingStore();
    const repo = await openRepo(store);
    const data = prngBytes(16 * MiB, 9);
    const { record } = await backup(repo, data);
    expect(record.chunks.length).toBeGreaterThanOrEqual(8);
    // The same chunks with each pair swapped: their blobs lie in the pack in the other order.
    const pieces = chunkRanges(record).map((c) => data.subarray(c.start, c.end));
    const order = record.chunks.map((_, i) =>
      i % 2 === 0 ? Math.min(i + 1, record.chunks.length - 1) : i - 1,
    );
    const swapped: StreamRecord = { ...record, chunks: order.map((i) => record.chunks[i]!) };
    const expected = Buffer.concat(order.map((i) => pieces[i]!));

    const copy = Buffer.alloc(expected.length);
    await repo.forEachChunk(swapped, (bytes, offset) => {
      copy.set(bytes, offset);
      return Promise.resolve();
    });
    expect(copy.equals(expected)).toBe(true);
    // 16 MiB of random chunks (~14) in one pack: ranges of at most 8 MiB each, a few more where
    // the writer's own shuffle stretches a range (3 to 5 in 12 runs); one a chunk would be ~14.
    expect(store.ranged).toBeLessThanOrEqual(7);
    store.ranged = 0;
    expect((await readAll(repo.readStream(swapped))).equals(expected)).toBe(true);
    expect(store.ranged).toBeLessThanOrEqual(7);
  });

  it('gives back a maxSize chunk of zeros from its id alone: its blob is never read', async () => {
    const store = new MemoryStore();
    const repo = await openRepo(store);
    const data = Buffer.concat([prngBytes(MiB, 5), Buffer.alloc(2 * maxSize), prngBytes(MiB, 6)]);
    const { record } = await backup(repo, data);
    const zeroId = sha256Hex(Buffer.alloc(maxSize));
    const zero = record.chunks.find((c) => c.id === zeroId)!;
    const loc = repo.index.get(zero.id)!;
    // Damage the zero chunk's blob: a read of it would fail authentication.
    store.raw(packKey(loc.pack))![loc.offset + 20]! ^= 0xff;

    const zeros: number[] = [];
    await repo.forEachChunk(record, (_bytes, offset, isZero) => {
      if (isZero) zeros.push(offset);
      return Promise.resolve();
    });

    const expected = chunkRanges(record)
      .filter((c) => c.id === zero.id)
      .map((c) => c.start);
    expect(expected.length).toBeGreaterThanOrEqual(1);
    expect(zeros).toEqual(expected);
    expect((await readAll(repo.readStream(record))).equals(data)).toBe(true);
  });
});

describe('deduplication', () => {
  const size = 40 * MiB;
  const original = mixedData(size, 7);
  const shared = sharedRepository();
  let first: Awaited<ReturnType<typeof backup>>;

  beforeAll(async () => {
    first = await backup(shared.repo, original);
  });

  /** The chunks of `record` the first backup did not have, with their stream ranges. */
  const newChunksOf = (record: StreamRecord) => {
    const known = new Set(first.record.chunks.map((c) => c.id));
    return chunkRanges(record).filter((c) => !known.has(c.id));
  };

  it('stores nothing new when the same data is backed up again', async () => {
    const packsBefore = packKeys(shared.store);

    const second = await backup(shared.repo, original);

    expect(second.stats).toMatchObject({ bytesNew: 0, newChunks: 0, bytesStored: 0 });
    expect(packKeys(shared.store)).toEqual(packsBefore);
    expect(second.record.chunks).toEqual(first.record.chunks);
  });

  it('stores nothing new when another process opens the repository and backs up the same data', async () => {
    const later = await openRepo(shared.store, shared.keys);

    const second = await backup(later, original);

    expect(second.stats.bytesNew).toBe(0);
    expect(second.record.chunks).toEqual(first.record.chunks);
  });

  it('re-stores only the chunks around the edits when 1 % of the data changes in 4 places', async () => {
    const edits = [0.15, 0.4, 0.65, 0.9].map((at, e) => ({
      start: Math.floor(at * size),
      bytes: prngBytes(size / 100 / 4, 100 + e),
    }));
    const changed = Buffer.from(original);
    for (const edit of edits) edit.bytes.copy(changed, edit.start);

    const second = await backup(shared.repo, changed);

    // A chunk is new only where an edit touches it, or just after one (the edit can move a cut,
    // and the next chunk then ends at the next old cut): never far from an edit.
    const fresh = newChunksOf(second.record);
    for (const chunk of fresh) {
      const nearEdit = edits.some(
        (e) => chunk.end > e.start && chunk.start < e.start + e.bytes.length + maxSize,
      );
      expect(nearEdit, `chunk at ${chunk.start}..${chunk.end}`).toBe(true);
    }
    expect(fresh.length).toBeLessThanOrEqual(2 * edits.length);
    expect(second.stats.bytesNew).toBe(fresh.reduce((n, c) => n + c.length, 0));
    expect(second.stats.bytesNew).toBeLessThan(size / 2);
    expect((await readAll(shared.repo.readStream(second.record))).equals(changed)).toBe(true);
  });

  it('re-stores at most two chunks beyond 4 MiB inserted in the middle', async () => {
    const inserted = prngBytes(4 * MiB, 200);
    const at = size / 2 + 12_345;
    const changed = Buffer.concat([original.subarray(0, at), inserted, original.subarray(at)]);

    const second = await backup(shared.repo, changed);

    const fresh = newChunksOf(second.record);
    for (const chunk of fresh) {
      expect(chunk.end).toBeGreaterThan(at - maxSize);
      expect(chunk.start).toBeLessThan(at + inserted.length + maxSize);
    }
    expect(second.stats.bytesNew - inserted.length).toBeLessThanOrEqual(2 * maxSize);
  });
});

describe('what the store can see', () => {
  const shared = sharedRepository();
  /** 64 bytes no stored object may contain. */
  const marker = Buffer.from('STOWAGE-PLAINTEXT-MARKER/'.padEnd(64, 'x'));
  let data: Buffer;
  let record: StreamRecord;

  beforeAll(async () => {
    // The marker in random, zero and text runs alike, and once across a likely chunk boundary.
    data = mixedData(12 * MiB, 12);
    for (let at = 1000; at < data.length - marker.length; at += 700 * 1024 + 13) {
      marker.copy(data, at);
    }
    ({ record } = await backup(shared.repo, data, `volume/${marker.toString()}`));
    await shared.repo.saveManifest('rp-secret', {
      streams: [record],
      metadata: { note: marker.toString() },
    });
  });

  it('holds no object that contains a plaintext marker from the data, a stream name or metadata', () => {
    const keys = shared.store.keys();
    const revealing = keys.filter((key) => shared.store.raw(key)!.includes(marker));

    expect(keys.length).toBeGreaterThan(3);
    expect(revealing).toEqual([]);
    expect(keys.filter((key) => key.includes(marker.toString()))).toEqual([]);
  });

  it('names objects only as the object layout says, with one index per pack', () => {
    const keys = shared.store.keys();
    const layout =
      /^(config|data\/([0-9a-f]{2})\/\2[0-9a-f]{62}|index\/[0-9a-f]{64}|points\/[^/]+\/manifest)$/;
    const packs = keys.filter((k) => k.startsWith('data/')).map((k) => k.slice(-64));
    const indexes = keys.filter((k) => k.startsWith('index/')).map((k) => k.slice('index/'.length));

    expect(keys.filter((k) => !layout.test(k))).toEqual([]);
    expect(keys).toContain('config');
    expect(keys).toContain(manifestKey('rp-secret'));
    expect(packs.length).toBeGreaterThan(0);
    expect(indexes.sort()).toEqual(packs.sort());
  });

  it('refuses to open the repository with another key, naming where that key came from', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stowage-repo-'));
    try {
      const otherKey = new LocalKeyFile(join(dir, 'other.key'));

      const err = await Repository.open({ store: shared.store, keys: otherKey, workers: 2 }).catch(
        (e: unknown) => e,
      );

      expect(err).toBeInstanceOf(IntegrityError);
      expect((err as Error).message).toContain(otherKey.describe());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses another in-memory key the same way', async () => {
    const otherKey = new StaticKey(randomBytes(32));

    const opening = Repository.open({ store: shared.store, keys: otherKey, workers: 2 });

    await expect(opening).rejects.toThrow(IntegrityError);
    await expect(opening).rejects.toThrow(otherKey.describe());
  });

  it('saves and loads a manifest under its recovery point', async () => {
    const manifest = { streams: [record], metadata: { image: 'nginx:1.27', ports: [80, 443] } };

    const key = await shared.repo.saveManifest('rp-1', manifest);
    const loaded = await shared.repo.loadManifest<typeof manifest>('rp-1');

    expect(key).toBe(manifestKey('rp-1'));
    expect(loaded).toEqual(manifest);
  });

  it('refuses a manifest moved to another recovery point, naming that point', async () => {
    await shared.repo.saveManifest('rp-a', { streams: [record], metadata: {} });
    await shared.store.put(manifestKey('rp-b'), shared.store.raw(manifestKey('rp-a'))!);

    const loading = shared.repo.loadManifest('rp-b');

    await expect(loading).rejects.toThrow(IntegrityError);
    await expect(loading).rejects.toThrow(/rp-b/);
  });

  it('rejects loading the manifest of a point that has none with ObjectNotFound', async () => {
    await expect(shared.repo.loadManifest('rp-never')).rejects.toBeInstanceOf(ObjectNotFound);
  });
});

describe('integrity', () => {
  const shared = sharedRepository();
  const data = prngBytes(40 * MiB, 41);
  let record: StreamRecord;

  beforeAll(async () => {
    ({ record } = await backup(shared.repo, data, 'volume/data'));
  });

  /** The chunks of the record with their stream ranges and where their blobs are. */
  const located = () =>
    chunkRanges(record).map((chunk) => ({ ...chunk, ...shared.repo.index.get(chunk.id)! }));

  /** Runs `act` with one pack object altered, and puts the original back afterwards. */
  async function withPack<T>(
    pack: string,
    alter: (bytes: Buffer) => Buffer | undefined,
    act: () => Promise<T>,
  ) {
    const key = packKey(pack);
    const original = shared.store.raw(key)!;
    const altered = alter(Buffer.from(original));
    if (altered) shared.store.replace(key, altered);
    else await shared.store.delete(key);
    try {
      return await act();
    } finally {
      if (altered) shared.store.replace(key, original);
      else await shared.store.put(key, original);
    }
  }

  it('spreads the test stream over several packs', () => {
    expect(new Set(located().map((c) => c.pack)).size).toBeGreaterThanOrEqual(3);
  });

  // The damaged chunk is in the middle of the second pack, so earlier packs read fine first.
  it.each([
    ['the version byte', () => 0],
    ['the flags byte', () => 1],
    ['a nonce byte', () => 7],
    ['a ciphertext byte', (length: number) => length >> 1],
    ['a tag byte', (length: number) => length - 1],
  ])(
    'fails at the damaged chunk, after only correct bytes, when %s of its blob is flipped',
    async (_part, at) => {
      const chunks = located();
      const secondPack = chunks.find((c) => c.pack !== chunks[0]!.pack)!.pack;
      const inPack = chunks.filter((c) => c.pack === secondPack);
      const damaged = inPack[inPack.length >> 1]!;

      const { bytes, error } = await withPack(
        secondPack,
        (pack) => {
          pack[damaged.offset + at(damaged.length)]! ^= 0x10;
          return pack;
        },
        () => drain(shared.repo.readStream(record, undefined, 'recovery point rp-7, ')),
      );

      expect(error).toBeInstanceOf(IntegrityError);
      expect((error as Error).message).toMatch(/^recovery point rp-7, stream volume\/data, /);
      expect((error as Error).message).toContain(damaged.id);
      expect(offsetIn(error)).toBe(damaged.start);
      expect(bytes.length).toBeLessThanOrEqual(damaged.start);
      expect(bytes.equals(data.subarray(0, bytes.length))).toBe(true);
    },
  );

  it('fails naming the stream and the first offset in a pack that was deleted', async () => {
    const chunks = located();
    const lost = chunks.find((c) => c.pack !== chunks[0]!.pack)!;

    const { bytes, error } = await withPack(
      lost.pack,
      () => undefined,
      () => drain(shared.repo.readStream(record)),
    );

    expect(error).toBeInstanceOf(IntegrityError);
    expect((error as Error).message).toContain('stream volume/data');
    expect((error as Error).message).toContain(lost.pack);
    expect(offsetIn(error)).toBe(lost.start);
    expect(bytes.equals(data.subarray(0, bytes.length))).toBe(true);
  });

  it('verifies with the same error as a read, for a damaged and for a deleted pack', async () => {
    const chunks = located();
    const target = chunks[chunks.length - 2]!;
    const readError = () => drain(shared.repo.readStream(record)).then((r) => r.error);
    const verifyError = () =>
      shared.repo.verifyStream(record).then(
        () => undefined,
        (e: unknown) => e,
      );
    const flip = (pack: Buffer) => {
      pack[target.offset + 40]! ^= 1;
      return pack;
    };

    const damaged = await withPack(target.pack, flip, async () => [
      await readError(),
      await verifyError(),
    ]);
    const deleted = await withPack(
      target.pack,
      () => undefined,
      async () => [await readError(), await verifyError()],
    );

    for (const [read, verified] of [damaged, deleted]) {
      expect(verified).toBeInstanceOf(IntegrityError);
      expect((verified as Error).message).toBe((read as Error).message);
    }
    expect(offsetIn(damaged[0])).toBe(target.start);
  });

  it('fails naming the offset of a chunk the repository does not hold', async () => {
    const unknown = { id: sha256Hex(Buffer.from('never stored')), length: 12 };
    const broken = {
      ...record,
      size: record.size + 12,
      chunks: [...record.chunks.slice(0, 3), unknown, ...record.chunks.slice(3)],
    };
    const offset = chunkRanges(record)[3]!.start;

    const error = await shared.repo.verifyStream(broken).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(IntegrityError);
    expect(offsetIn(error)).toBe(offset);
  });

  it('reads the stream whole again once the packs are back', async () => {
    expect((await readAll(shared.repo.readStream(record))).equals(data)).toBe(true);
  });
});

describe('bad objects under index/', () => {
  it('opens, backs up and restores past a junk index object and a valid index copied under another pack name, and reports both', async () => {
    const keys = new StaticKey(randomBytes(32));
    const store = new MemoryStore();
    const first = await openRepo(store, keys);
    const data = mixedData(6 * MiB, 11);
    const { record } = await backup(first, data);
    const [index] = store.keys().filter((k) => k.startsWith('index/'));
    const otherPack = 'ab'.repeat(32);
    await store.put('index/junk', Buffer.from('not an index at all'));
    await store.put(`index/${otherPack}`, store.raw(index!)!);
    const reported: string[] = [];

    const repo = await Repository.open({
      store,
      keys,
      workers: 2,
      onBadIndex: (key) => reported.push(key),
    });
    opened.push(repo);
    const restored = await readAll(repo.readStream(record));
    const again = await backup(repo, mixedData(2 * MiB, 12), 'other');
    await repo.refresh();

    expect(Buffer.compare(restored, data)).toBe(0);
    expect(again.record.chunks.length).toBeGreaterThan(0);
    expect(reported.sort()).toEqual(['index/junk', `index/${otherPack}`].sort());
    expect(repo.badIndexes()).toEqual([
      `index/${otherPack}: it describes pack ${index!.slice('index/'.length)}, not ${otherPack}`,
      expect.stringMatching(/^index\/junk: it cannot be opened with the repository's key/),
    ]);
    expect(repo.index.has(record.chunks[0]!.id)).toBe(true);
  });

  it('does not know the chunks a skipped index listed: a point that needs them fails its verify', async () => {
    const keys = new StaticKey(randomBytes(32));
    const store = new MemoryStore();
    const first = await openRepo(store, keys);
    const { record } = await backup(first, prngBytes(2 * MiB, 5));
    const [index] = store.keys().filter((k) => k.startsWith('index/'));
    store.replace(index!, Buffer.from('overwritten by someone without the key'));

    const repo = await openRepo(store, keys);

    await expect(repo.verifyStream(record)).rejects.toThrow(/not in the repository|index/);
    expect(repo.badIndexes()).toHaveLength(1);
  });
});

describe('resuming after a failed backup', () => {
  const size = 40 * MiB;
  const data = mixedData(size, 60);
  const failAt = 24 * MiB;

  /** The source of a backup that breaks once ~60 % of the data was read. */
  async function* breaksAt60Percent(): AsyncGenerator<Buffer> {
    for await (const piece of readsOf(data.subarray(0, failAt))) yield piece;
    throw new Error('source broke at 60 %');
  }

  /**
   * Writes until the source breaks, then flushes as the runner does on failure. Returns the
   * source's error and the writer's stats as flush left them.
   */
  async function failedBackup(store: MemoryStore, keys: KeyProvider) {
    const repo = await openRepo(store, keys);
    const writer = repo.writer();
    const failure = await writer
      .writeStream({ name: 'disk', kind: 'disk' }, breaksAt60Percent())
      .catch((err: unknown) => err);
    await writer.flush();
    const afterFlush = { ...writer.stats };
    // Work the writer left running would be rejected when afterEach closes its pool.
    await settled(writer.stats);
    return { failure, afterFlush, settled: { ...writer.stats } };
  }

  /** Resolves once `stats` has not changed for 100 ms (at most 3 s). */
  async function settled(stats: object) {
    const deadline = Date.now() + 3000;
    let last = JSON.stringify(stats);
    let stableSince = Date.now();
    while (Date.now() - stableSince < 100 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      const now = JSON.stringify(stats);
      if (now !== last) [last, stableSince] = [now, Date.now()];
    }
  }

  it('passes the source error on', async () => {
    const { failure } = await failedBackup(new MemoryStore(), new StaticKey(randomBytes(32)));

    expect((failure as Error).message).toBe('source broke at 60 %');
  });

  it('does no more work once flush has returned', async () => {
    const { afterFlush, settled } = await failedBackup(
      new MemoryStore(),
      new StaticKey(randomBytes(32)),
    );

    expect(settled).toEqual(afterFlush);
  });

  // The chunker holds back less than maxSize bytes, so every chunk ending before failAt - maxSize
  // was cut and handed to the writer before the source broke; flush must have stored them all.
  it('keeps every chunk it cut before the source broke, for a later process to find', async () => {
    const store = new MemoryStore();
    const keys = new StaticKey(randomBytes(32));
    const cut: Array<{ id: string; end: number }> = [];
    let end = 0;
    for await (const chunk of chunkStream(readsOf(data))) {
      end += chunk.length;
      if (end <= failAt - maxSize) cut.push({ id: sha256Hex(chunk), end });
    }

    await failedBackup(store, keys);
    const retry = await openRepo(store, keys);

    const lost = cut.filter((c) => !retry.index.has(c.id)).map((c) => c.end);
    expect(lost).toEqual([]);
  });

  it('lets the retry re-store at most the unread 40 % and the one chunk the failure cut short', async () => {
    const store = new MemoryStore();
    const keys = new StaticKey(randomBytes(32));
    await failedBackup(store, keys);

    const later = await openRepo(store, keys);

    const retry = await backup(later, data);

    expect(retry.stats.bytesNew).toBeLessThanOrEqual(size - failAt + maxSize);
    expect((await readAll(later.readStream(retry.record))).equals(data)).toBe(true);
  });
});

/** A MemoryStore that keeps pack bodies' sizes only, so stored data does not count as memory. */
class PackDiscardingStore extends MemoryStore {
  packBytes = 0;
  override async put(key: string, body: Readable | Buffer): Promise<void> {
    if (!key.startsWith(PACKS_PREFIX)) return super.put(key, body);
    if (Buffer.isBuffer(body)) this.packBytes += body.length;
    else for await (const part of body) this.packBytes += (part as Buffer).length;
  }
}

describe('memory', () => {
  it('keeps memory growth under 200 MiB while writing a 200 MiB stream', async () => {
    const size = 200 * MiB;
    const store = new PackDiscardingStore();
    const repo = await openRepo(store);
    let peak = 0;
    const sample = () => {
      peak = Math.max(peak, process.memoryUsage().rss);
    };
    // Random data, generated piece by piece as it is read: nothing compresses or deduplicates,
    // so every byte goes through hashing, sealing and packing.
    async function* lazily(): AsyncGenerator<Buffer> {
      for (let i = 0; i < size / MiB; i++) {
        sample();
        yield prngBytes(MiB, 1000 + i);
      }
    }
    const baseline = process.memoryUsage().rss;
    const timer = setInterval(sample, 10);

    let record: StreamRecord;
    try {
      const writer = repo.writer();
      record = await writer.writeStream({ name: 'big', kind: 'disk' }, lazily());
      await writer.flush();
      sample();
    } finally {
      clearInterval(timer);
    }

    expect(record.size).toBe(size);
    expect(store.packBytes).toBeGreaterThanOrEqual(size);
    expect(peak - baseline).toBeLessThan(200 * MiB);
  });
});
