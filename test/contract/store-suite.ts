/**
 * The ObjectStore port's contract (agents/store/store.ts) as one suite every backend runs
 * (restic's `internal/backend/test/suite.go` is the model), so S3 on s3rver, the directory store
 * and the in-memory fake the domain tests lean on cannot drift apart. A new backend is one file:
 *
 *   describeObjectStoreContract('DirStore', async () => {
 *     const root = await mkdtemp(join(tmpdir(), 'store-'));
 *     return { store: new DirStore(root), cleanup: () => rm(root, { recursive: true }) };
 *   });
 *
 * `makeStore` is called before every case and must return an empty store; `cleanup` after it.
 * `options.serverGaps` names cases a backend's *server* cannot pass (an emulator's gap, with the
 * reason, shown in the case's title); never use it to excuse the adapter.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  getBuffer,
  getInto,
  ObjectExists,
  ObjectNotFound,
  RangeNotSatisfiable,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
} from '../../agents/store/store';

export interface StoreUnderTest {
  store: ObjectStore;
  cleanup(): Promise<void>;
}

export interface ContractOptions {
  /** Promises the server under the adapter cannot keep, each with the reason (not the adapter's). */
  serverGaps?: {
    /** Of two puts of one key at once, exactly one stores its object. */
    racingPuts?: string;
  };
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** A byte stream of `data` in `chunkSize` pieces, as a pipeline would hand it over. */
function streamOf(data: Buffer, chunkSize = 64 * KiB): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; at += chunkSize)
    chunks.push(data.subarray(at, at + chunkSize));
  return Readable.from(chunks, { objectMode: false });
}

/** A stream that delivers `goodBytes` and then fails, as a source that dies midway does. */
function failingStream(goodBytes: number, error = new Error('source failed')): Readable {
  async function* produce() {
    for (let sent = 0; sent < goodBytes; sent += MiB) {
      yield randomBytes(Math.min(MiB, goodBytes - sent));
    }
    throw error;
  }
  return Readable.from(produce(), { objectMode: false });
}

/** `size` random bytes as a stream, with the SHA-256 of what it produced once it has ended. */
function randomStream(size: number): { body: Readable; digest: () => string } {
  const hash = createHash('sha256');
  async function* produce() {
    for (let sent = 0; sent < size; sent += MiB) {
      const chunk = randomBytes(Math.min(MiB, size - sent));
      hash.update(chunk);
      yield chunk;
    }
  }
  return {
    body: Readable.from(produce(), { objectMode: false }),
    digest: () => hash.digest('hex'),
  };
}

async function digestOf(body: Readable): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of body) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha256: hash.digest('hex') };
}

async function listed(store: ObjectStore, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of store.list(prefix)) out.push(info);
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

async function putAll(store: ObjectStore, objects: Map<string, Buffer>, concurrency = 16) {
  const queue = [...objects];
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) await store.put(next[0], next[1]);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

function infos(objects: Map<string, Buffer>): ObjectInfo[] {
  return [...objects]
    .map(([key, data]) => ({ key, size: data.length }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** A small deterministic PRNG, so the random ranges are the same on every run. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function describeObjectStoreContract(
  name: string,
  makeStore: () => Promise<StoreUnderTest>,
  options: ContractOptions = {},
): void {
  describe(`ObjectStore contract (${name})`, () => {
    let store: ObjectStore;
    let cleanup: (() => Promise<void>) | undefined;

    beforeEach(async () => {
      ({ store, cleanup } = await makeStore());
    });

    afterEach(async () => {
      await cleanup?.();
      cleanup = undefined;
    });

    describe('put and get', () => {
      it.each([
        ['0 bytes', 0],
        ['1 byte', 1],
        ['5 MiB', 5 * MiB],
      ])('returns %s put as a Buffer and as a stream byte for byte', async (_label, size) => {
        const data = randomBytes(size);

        await store.put('objects/buffer', data);
        await store.put('objects/stream', streamOf(data));

        expect((await getBuffer(store, 'objects/buffer')).equals(data)).toBe(true);
        expect((await getBuffer(store, 'objects/stream')).equals(data)).toBe(true);
      });

      it('stores a 40 MiB stream (several multipart parts on S3) byte for byte', async () => {
        const { body, digest } = randomStream(40 * MiB);

        await store.put('objects/large', body);

        expect(await digestOf(await store.get('objects/large'))).toEqual({
          size: 40 * MiB,
          sha256: digest(),
        });
      });

      it('refuses to replace an object, by Buffer or by stream, and keeps the stored one', async () => {
        const original = randomBytes(100 * KiB);
        await store.put('objects/k', original);

        await expect(store.put('objects/k', Buffer.from('short'))).rejects.toBeInstanceOf(
          ObjectExists,
        );
        await expect(store.put('objects/k', streamOf(randomBytes(3 * MiB)))).rejects.toMatchObject({
          name: 'ObjectExists',
          key: 'objects/k',
        });

        expect((await getBuffer(store, 'objects/k')).equals(original)).toBe(true);
        expect(await listed(store, 'objects/')).toEqual([{ key: 'objects/k', size: 100 * KiB }]);
      });

      it('refuses a multipart-sized stream over an existing key when the upload completes', async () => {
        const original = Buffer.from('first');
        await store.put('objects/big', original);

        await expect(store.put('objects/big', randomStream(20 * MiB).body)).rejects.toBeInstanceOf(
          ObjectExists,
        );

        expect((await getBuffer(store, 'objects/big')).equals(original)).toBe(true);
      });

      // A server that cannot keep this promise (see ContractOptions) does not get the case at all:
      // the gap is the emulator's, documented where the backend's test names it.
      if (options.serverGaps?.racingPuts === undefined) {
        it('stores exactly one of two puts of the same key that race, whole', async () => {
          const a = Buffer.alloc(2 * MiB, 'a');
          const b = Buffer.alloc(3 * MiB, 'b');

          const outcomes = await Promise.allSettled([
            store.put('objects/race', streamOf(a)),
            store.put('objects/race', b),
          ]);

          const won = outcomes.filter((o) => o.status === 'fulfilled');
          const lost = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
          expect(won).toHaveLength(1);
          expect(lost).toEqual([expect.objectContaining({ name: 'ObjectExists' })]);
          const stored = await getBuffer(store, 'objects/race');
          expect(stored.equals(outcomes[0]!.status === 'fulfilled' ? a : b)).toBe(true);
        });
      }

      it('rejects get of a missing key with ObjectNotFound, with or without a range', async () => {
        await store.put('objects/present', Buffer.from('x'));

        await expect(store.get('objects/absent')).rejects.toBeInstanceOf(ObjectNotFound);
        await expect(store.get('objects/absent', { offset: 0, length: 1 })).rejects.toMatchObject({
          name: 'ObjectNotFound',
          key: 'objects/absent',
        });
      });

      it('treats a prefix of stored keys as no object', async () => {
        await store.put('dir/inner', Buffer.from('x'));

        expect(await store.exists('dir')).toBe(false);
        await expect(store.get('dir')).rejects.toBeInstanceOf(ObjectNotFound);
      });
    });

    describe('a body that fails midway', () => {
      it.each([
        ['after 1 MiB', 1 * MiB],
        ['after 20 MiB (a multipart upload on S3)', 20 * MiB],
      ])('stores nothing when the stream fails %s', async (_label, goodBytes) => {
        const failure = new Error('source failed');

        await expect(store.put('objects/partial', failingStream(goodBytes, failure))).rejects.toBe(
          failure,
        );

        await expect(store.get('objects/partial')).rejects.toBeInstanceOf(ObjectNotFound);
        expect(await store.exists('objects/partial')).toBe(false);
        expect(await listed(store, 'objects/')).toEqual([]);
      });

      it('leaves the earlier object under the same key whole', async () => {
        const earlier = randomBytes(256 * KiB);
        await store.put('objects/k', earlier);

        await expect(store.put('objects/k', failingStream(2 * MiB))).rejects.toThrow(
          'source failed',
        );

        expect((await getBuffer(store, 'objects/k')).equals(earlier)).toBe(true);
        expect(await listed(store, 'objects/')).toEqual([{ key: 'objects/k', size: 256 * KiB }]);
      });
    });

    describe('ranged get', () => {
      const size = 100_003;
      let data: Buffer;
      beforeEach(async () => {
        data = randomBytes(size);
        await store.put('ranged/object', data);
      });

      const inside: [string, ByteRange][] = [
        ['the first byte', { offset: 0, length: 1 }],
        ['the start', { offset: 0, length: 4 * KiB }],
        ['the middle', { offset: 12_345, length: 4_096 }],
        ['the last byte', { offset: size - 1, length: 1 }],
        ['the end', { offset: size - 500, length: 500 }],
        ['the whole object', { offset: 0, length: size }],
        ['no bytes at the start', { offset: 0, length: 0 }],
        ['no bytes at the end', { offset: size, length: 0 }],
      ];
      it.each(inside)('returns exactly %s', async (_label, range) => {
        const got = await getBuffer(store, 'ranged/object', range);

        expect(got.length).toBe(range.length);
        expect(got.equals(data.subarray(range.offset, range.offset + range.length))).toBe(true);
      });

      it('returns exactly the asked bytes for any range inside the object', async () => {
        const random = mulberry32(7);
        for (let i = 0; i < 25; i++) {
          const offset = Math.floor(random() * size);
          const length = 1 + Math.floor(random() * (size - offset));

          const got = await getBuffer(store, 'ranged/object', { offset, length });

          expect(got.equals(data.subarray(offset, offset + length)), `${offset}+${length}`).toBe(
            true,
          );
        }
      });

      it('reads any range inside the object into a given buffer with getInto (shared memory too)', async () => {
        const random = mulberry32(8);
        for (let i = 0; i < 10; i++) {
          const offset = Math.floor(random() * size);
          const length = 1 + Math.floor(random() * (size - offset));
          const into = new Uint8Array(new SharedArrayBuffer(length + 8), 4, length);

          await getInto(store, 'ranged/object', { offset, length }, into);

          expect(Buffer.from(into).equals(data.subarray(offset, offset + length))).toBe(true);
        }
      });

      it('rejects getInto of a range past the end, or of a missing object, as get does', async () => {
        const into = new Uint8Array(2);
        await expect(
          getInto(store, 'ranged/object', { offset: size - 1, length: 2 }, into),
        ).rejects.toBeInstanceOf(RangeNotSatisfiable);
        await expect(
          getInto(store, 'ranged/missing', { offset: 0, length: 2 }, into),
        ).rejects.toBeInstanceOf(ObjectNotFound);
      });

      const outside: [string, ByteRange][] = [
        ['starts at the end', { offset: size, length: 1 }],
        ['runs one byte past the end', { offset: size - 1, length: 2 }],
        ['is longer than the object', { offset: 0, length: size + 1 }],
        ['starts far beyond the end', { offset: 10 * size, length: 10 }],
        ['is zero bytes beyond the end', { offset: size + 1, length: 0 }],
      ];
      it.each(outside)(
        'rejects a range that %s with RangeNotSatisfiable',
        async (_label, range) => {
          await expect(store.get('ranged/object', range)).rejects.toMatchObject({
            name: 'RangeNotSatisfiable',
            key: 'ranged/object',
            range,
          });
        },
      );

      it('serves only the empty range of an empty object', async () => {
        await store.put('ranged/empty', Buffer.alloc(0));

        expect(await getBuffer(store, 'ranged/empty', { offset: 0, length: 0 })).toEqual(
          Buffer.alloc(0),
        );
        await expect(store.get('ranged/empty', { offset: 0, length: 1 })).rejects.toBeInstanceOf(
          RangeNotSatisfiable,
        );
      });
    });

    describe('exists', () => {
      it('is true for a stored key and false for one never stored or deleted', async () => {
        await store.put('e/stored', Buffer.from('x'));
        await store.put('e/deleted', Buffer.from('x'));
        await store.delete('e/deleted');

        expect(await store.exists('e/stored')).toBe(true);
        expect(await store.exists('e/never')).toBe(false);
        expect(await store.exists('e/deleted')).toBe(false);
      });
    });

    describe('list', () => {
      const objects = new Map(
        [
          ['a/1', 1],
          ['a/2', 22],
          ['a/sub/3', 333],
          ['a/sub/deeper/4', 0],
          ['ab/5', 5],
          ['b/6', 6],
          ['data/abc', 7],
          ['data/abd/x', 8],
          ['data/b', 9],
        ].map(([key, size]) => [key as string, randomBytes(size as number)]),
      );
      const under = (prefix: string) =>
        infos(new Map([...objects].filter(([key]) => key.startsWith(prefix))));

      beforeEach(async () => {
        await putAll(store, objects);
      });

      it.each(['a/', 'a', 'a/sub/', 'a/s', 'data/ab', 'data/', 'b/6', ''])(
        'yields exactly the keys under %j with their sizes',
        async (prefix) => {
          expect(await listed(store, prefix)).toEqual(under(prefix));
        },
      );

      it('yields nothing under a prefix nothing is stored under', async () => {
        expect(await listed(store, 'none/')).toEqual([]);
        expect(await listed(store, 'a/zzz')).toEqual([]);
      });

      it('yields all of 1,050 keys, across S3 list pages of 1,000', async () => {
        const many = new Map(
          Array.from({ length: 1050 }, (_, i) => [
            `many/${String(i).padStart(4, '0')}`,
            Buffer.alloc(i % 7, i % 256),
          ]),
        );
        await putAll(store, many, 32);

        expect(await listed(store, 'many/')).toEqual(infos(many));

        await store.deletePrefix('many/');

        expect(await listed(store, 'many/')).toEqual([]);
        expect(await listed(store, '')).toEqual(infos(objects));
      });
    });

    describe('delete', () => {
      it('removes the object and leaves its neighbours', async () => {
        await store.put('d/1', Buffer.from('one'));
        await store.put('d/2', Buffer.from('two'));

        await store.delete('d/1');

        await expect(store.get('d/1')).rejects.toBeInstanceOf(ObjectNotFound);
        expect(await listed(store, 'd/')).toEqual([{ key: 'd/2', size: 3 }]);
      });

      it('is idempotent: deleting what is not there resolves', async () => {
        await store.put('d/1', Buffer.from('one'));
        await store.delete('d/1');

        await expect(store.delete('d/1')).resolves.toBeUndefined();
        await expect(store.delete('never/stored/key')).resolves.toBeUndefined();
      });
    });

    describe('deletePrefix', () => {
      it('removes every key under the prefix and nothing else', async () => {
        const objects = new Map(
          ['p/1', 'p/q/2', 'p/q/r/3', 'pp/4', 'o/5', 'x/abc', 'x/abd/6', 'x/b'].map((k) => [
            k,
            Buffer.from(k),
          ]),
        );
        await putAll(store, objects);

        await store.deletePrefix('p/');
        await store.deletePrefix('x/ab');

        expect((await listed(store, '')).map((o) => o.key)).toEqual(['o/5', 'pp/4', 'x/b']);
        expect(await store.exists('p/q/2')).toBe(false);
      });

      it('is idempotent: a prefix with nothing under it resolves', async () => {
        await store.put('p/1', Buffer.from('x'));
        await store.deletePrefix('p/');

        await expect(store.deletePrefix('p/')).resolves.toBeUndefined();
        await expect(store.deletePrefix('never/')).resolves.toBeUndefined();
      });
    });

    describe('keys', () => {
      const keys = [
        'points/rp-01/streams/0000',
        'a/b/c/d/e/f/g.h',
        'site=lab/target=db-01/vol_data+1/v1.2.3',
        'x+y=z/-_./a',
        'trailing.dot.',
        'k-_=+.',
      ];

      it('stores, lists and deletes keys with several levels and = + - _ .', async () => {
        const objects = new Map(keys.map((key, i) => [key, Buffer.from(`${i}:${key}`)]));

        await putAll(store, objects);

        for (const [key, data] of objects) {
          expect(await store.exists(key), key).toBe(true);
          expect((await getBuffer(store, key)).equals(data), key).toBe(true);
        }
        expect(await listed(store, '')).toEqual(infos(objects));
        expect(await listed(store, 'site=lab/target=db-01/')).toEqual(
          infos(new Map([[keys[2]!, objects.get(keys[2]!)!]])),
        );
        for (const key of keys) await store.delete(key);
        expect(await listed(store, '')).toEqual([]);
      });
    });
  });
}
