import { randomBytes, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  IntegrityError,
  MANIFEST_VERSION,
  PointReader,
  PointWriter,
  readManifest,
  type Manifest,
} from '../../../../agents/core/points';
import { ObjectNotFound } from '../../../../agents/store/store';
import { manifestKey, pointPrefix, streamKey } from '../../../../functions/core/object-layout';
import { T0 } from '../../../fixtures/factories';
import { MemoryStore } from '../../../fixtures/memory-store';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A source that hands `data` over in uneven chunks, as a tar stream or a socket would. */
function sourceOf(data: Buffer): Readable {
  const chunks: Buffer[] = [];
  let offset = 0;
  let size = 1;
  while (offset < data.length) {
    chunks.push(data.subarray(offset, offset + size));
    offset += size;
    size = (size * 7 + 13) % (200 * KiB) || 1;
  }
  return Readable.from(chunks);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

function makeCommit(
  overrides: Partial<Omit<Manifest, 'version' | 'streams' | 'recoveryPointId'>> = {},
) {
  return {
    jobId: 'job-1',
    target: 'docker:web',
    agent: 'site-1',
    startedAt: T0,
    completedAt: '2025-03-01T10:01:00.000Z',
    metadata: { image: 'nginx:1.27', env: ['A=1'] },
    ...overrides,
  };
}

let store: MemoryStore;

beforeEach(() => {
  store = new MemoryStore();
});

/** Writes `streams` as point `pointId`, commits it and opens it for reading. */
async function writePoint(pointId: string, streams: Array<[name: string, data: Buffer]>) {
  const writer = new PointWriter(store, pointId, () => undefined);
  for (const [name, data] of streams) {
    await writer.writeStream({ name, kind: 'file' }, sourceOf(data));
  }
  await writer.commit(makeCommit());
  return writer;
}

async function openPoint(pointId: string, onBytes: (n: number) => void = () => undefined) {
  return new PointReader(store, await readManifest(store, pointId), onBytes);
}

describe('PointWriter and PointReader', () => {
  it.each([
    ['0 bytes', 0],
    ['1 byte', 1],
    ['64 KiB', 64 * KiB],
    ['5 MiB', 5 * MiB],
  ])('round-trip a stream of %s of random data byte for byte', async (_label, size) => {
    const data = randomBytes(size);
    let written = 0;
    let read = 0;
    const writer = new PointWriter(store, 'rp-1', (n) => (written += n));

    const stored = await writer.writeStream({ name: 'disk', kind: 'disk' }, sourceOf(data));
    await writer.commit(makeCommit());
    const reader = await openPoint('rp-1', (n) => (read += n));
    const back = await readAll(await reader.openStream('disk'));

    expect(back.equals(data)).toBe(true);
    expect(stored).toEqual({ name: 'disk', kind: 'disk', size, sha256: sha256(data) });
    expect(writer.bytesStored).toBe(size);
    expect(written).toBe(size);
    expect(read).toBe(size);
  });

  it('stores streams in the order written, one object each, and lists them so in the manifest', async () => {
    const image = randomBytes(3 * KiB);
    const volume = randomBytes(5 * KiB);

    await writePoint('rp-1', [
      ['image', image],
      ['volume/data', volume],
    ]);
    const reader = await openPoint('rp-1');

    expect(store.keys()).toEqual([manifestKey('rp-1'), streamKey('rp-1', 0), streamKey('rp-1', 1)]);
    expect(reader.streams.map((s) => s.name)).toEqual(['image', 'volume/data']);
    expect((await readAll(await reader.openStream('volume/data'))).equals(volume)).toBe(true);
    expect((await readAll(await reader.openStream('image'))).equals(image)).toBe(true);
  });

  it('refuses to write the same stream name twice in one point', async () => {
    const writer = new PointWriter(store, 'rp-1', () => undefined);
    await writer.writeStream(
      { name: 'image', kind: 'docker-image-tar' },
      sourceOf(randomBytes(10)),
    );

    const again = writer.writeStream(
      { name: 'image', kind: 'docker-image-tar' },
      sourceOf(randomBytes(10)),
    );

    await expect(again).rejects.toThrow('stream image written twice in point rp-1');
    expect(writer.streams).toHaveLength(1);
    expect(store.keys()).toEqual([streamKey('rp-1', 0)]);
  });

  it('rejects and records no stream when the source fails part way', async () => {
    const writer = new PointWriter(store, 'rp-1', () => undefined);
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(1024));
        this.destroy(new Error('docker export: connection reset'));
      },
    });

    const write = writer.writeStream({ name: 'image', kind: 'docker-image-tar' }, failing);

    await expect(write).rejects.toThrow('connection reset');
    expect(writer.streams).toEqual([]);
    expect(store.keys()).toEqual([]);
  });

  it('fails with IntegrityError when asked for a stream the point does not have', async () => {
    await writePoint('rp-1', [['image', randomBytes(10)]]);
    const reader = await openPoint('rp-1');

    await expect(reader.openStream('volume/data')).rejects.toThrow(IntegrityError);
    await expect(reader.openStream('volume/data')).rejects.toThrow(
      'recovery point rp-1 has no stream volume/data',
    );
  });
});

describe('the manifest', () => {
  it('is written by commit and by nothing before it', async () => {
    const writer = new PointWriter(store, 'rp-1', () => undefined);
    await writer.writeStream(
      { name: 'image', kind: 'docker-image-tar' },
      sourceOf(randomBytes(99)),
    );

    const before = await store.exists(manifestKey('rp-1'));
    const key = await writer.commit(makeCommit());

    expect(before).toBe(false);
    expect(key).toBe(manifestKey('rp-1'));
    expect(await store.exists(key)).toBe(true);
  });

  it('cannot be read before commit', async () => {
    const writer = new PointWriter(store, 'rp-1', () => undefined);
    await writer.writeStream(
      { name: 'image', kind: 'docker-image-tar' },
      sourceOf(randomBytes(99)),
    );

    await expect(readManifest(store, 'rp-1')).rejects.toBeInstanceOf(ObjectNotFound);
  });

  it('records the point, the job, the metadata and every stream with its key, size and hash', async () => {
    const data = randomBytes(1234);
    await writePoint('rp-1', [['image', data]]);

    const manifest = await readManifest(store, 'rp-1');

    expect(manifest).toEqual({
      version: MANIFEST_VERSION,
      recoveryPointId: 'rp-1',
      ...makeCommit(),
      streams: [
        {
          name: 'image',
          kind: 'file',
          key: streamKey('rp-1', 0),
          size: 1234,
          sha256: sha256(data),
        },
      ],
    });
  });

  it("is refused with IntegrityError when it is another point's manifest", async () => {
    await writePoint('rp-1', [['image', randomBytes(10)]]);
    await store.put(manifestKey('rp-2'), store.raw(manifestKey('rp-1'))!);

    await expect(readManifest(store, 'rp-2')).rejects.toThrow(IntegrityError);
  });

  it('is refused with IntegrityError when its version is not this one', async () => {
    await writePoint('rp-1', [['image', randomBytes(10)]]);
    const manifest = JSON.parse(store.raw(manifestKey('rp-1'))!.toString()) as Manifest;
    store.replace(manifestKey('rp-1'), Buffer.from(JSON.stringify({ ...manifest, version: 99 })));

    await expect(readManifest(store, 'rp-1')).rejects.toThrow(IntegrityError);
  });
});

describe('discard', () => {
  it("removes every object of the point, streams and manifest, and nothing of another's", async () => {
    await writePoint('rp-keep', [['image', randomBytes(10)]]);
    const writer = await writePoint('rp-1', [
      ['image', randomBytes(10)],
      ['volume/data', randomBytes(10)],
    ]);

    await writer.discard();

    expect(store.keys().filter((k) => k.startsWith(pointPrefix('rp-1')))).toEqual([]);
    expect(store.keys()).toEqual([manifestKey('rp-keep'), streamKey('rp-keep', 0)]);
  });

  it('removes the streams of a point that was never committed, and may be called twice', async () => {
    const writer = new PointWriter(store, 'rp-1', () => undefined);
    await writer.writeStream({ name: 'image', kind: 'file' }, sourceOf(randomBytes(10)));

    await writer.discard();
    await writer.discard();

    expect(store.keys()).toEqual([]);
  });
});

describe('reading a damaged stream', () => {
  const SIZE = 256 * KiB;

  /** Stores a point, damages its second stream with `change`, and opens that stream. */
  async function damaged(change: (stored: Buffer) => Buffer): Promise<Readable> {
    await writePoint('rp-1', [
      ['image', randomBytes(100)],
      ['volume/data', randomBytes(SIZE)],
    ]);
    const key = streamKey('rp-1', 1);
    store.replace(key, change(store.raw(key)!));
    const reader = await openPoint('rp-1');
    return reader.openStream('volume/data');
  }

  it.each([0, 1, 65_535, 65_536, SIZE / 2, SIZE - 1])(
    'fails with IntegrityError naming the point, the stream and an offset when byte %i is flipped',
    async (offset) => {
      const stream = await damaged((stored) => {
        stored[offset] = stored[offset]! ^ 0x01;
        return stored;
      });

      const err = await readAll(stream).then(
        () => undefined,
        (e: unknown) => e,
      );

      expect(err).toBeInstanceOf(IntegrityError);
      expect((err as Error).message).toMatch(
        /^recovery point rp-1, stream volume\/data, offset \d+: SHA-256 differs/,
      );
    },
  );

  it.each([1, 1000, SIZE - 1])(
    'fails with IntegrityError when the stream is %i bytes short',
    async (missing) => {
      const stream = await damaged((stored) => stored.subarray(0, SIZE - missing));

      const read = readAll(stream);

      await expect(read).rejects.toThrow(IntegrityError);
      await expect(read).rejects.toThrow(
        `recovery point rp-1, stream volume/data, offset ${SIZE - missing}: stream ends early`,
      );
    },
  );

  it('fails with IntegrityError when the stream is empty', async () => {
    const stream = await damaged(() => Buffer.alloc(0));

    const read = readAll(stream);

    await expect(read).rejects.toThrow(/offset 0: stream ends early/);
  });

  it('fails with IntegrityError when the stream has more bytes than recorded', async () => {
    const stream = await damaged((stored) => Buffer.concat([stored, Buffer.from('x')]));

    const read = readAll(stream);

    await expect(read).rejects.toThrow(IntegrityError);
    await expect(read).rejects.toThrow(/stream volume\/data, offset \d+: more bytes than the/);
  });

  it('reads the undamaged streams of the same point as usual', async () => {
    const image = randomBytes(100);
    await writePoint('rp-1', [
      ['image', image],
      ['volume/data', randomBytes(SIZE)],
    ]);
    const key = streamKey('rp-1', 1);
    store.replace(key, Buffer.alloc(SIZE));
    const reader = await openPoint('rp-1');

    const back = await readAll(await reader.openStream('image'));

    expect(back.equals(image)).toBe(true);
  });
});
