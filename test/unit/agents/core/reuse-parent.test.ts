/**
 * PointWriter.reuseParent (core/points.ts): a stream the driver knows is unchanged (the docker
 * driver's committed image, its writable layer as it was) is taken whole from the parent point,
 * with the source it was recorded with, when (and only when) the driver accepts that source, the
 * parent has a stream of that name and kind, and every one of its chunks is still stored.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PointWriter, type ParentPoint } from '../../../../agents/core/points';
import { StaticKey } from '../../../../agents/repo/keys';
import { Repository } from '../../../../agents/repo/repository';
import type { StreamRecord } from '../../../../agents/repo/types';
import { MemoryStore } from '../../../fixtures/memory-store';

const info = { name: 'image', kind: 'docker-image-tar' };
const SOURCE = '{"layer":"one"}';

let repo: Repository;
beforeEach(async () => {
  repo = await Repository.open({
    store: new MemoryStore(),
    keys: new StaticKey(randomBytes(32)),
    workers: 1,
  });
});
afterEach(() => repo.close());

async function contents(record: StreamRecord): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of repo.readStream(record)) parts.push(piece as Buffer);
  return Buffer.concat(parts);
}

const parentOf = (streams: StreamRecord[]): ParentPoint => ({
  recoveryPointId: 'rp-parent',
  streams,
  metadata: {},
  read: () => {
    throw new Error('not read');
  },
});

/** The first point: `bytes` written as the stream `info`, recorded with `source`. */
async function firstPoint(bytes: Buffer, source?: string): Promise<StreamRecord> {
  const writer = repo.writer();
  const sink = new PointWriter(writer, () => undefined);
  await sink.writeStream({ ...info, ...(source ? { source } : {}) }, Readable.from([bytes]));
  await writer.flush();
  return sink.streams[0]!;
}

describe('taking a whole stream from the parent point', () => {
  it('takes it, with its source, without reading, and counts it in the progress', async () => {
    const bytes = randomBytes(3 * 1024 * 1024);
    const parent = await firstPoint(bytes, SOURCE);
    expect(parent.source).toBe(SOURCE);

    const writer = repo.writer();
    let progressed = 0;
    const sink = new PointWriter(writer, (n) => (progressed += n), parentOf([parent]));
    const offered: string[] = [];
    const stored = await sink.reuseParent(info, (s) => (offered.push(s), true));
    expect(offered).toEqual([SOURCE]);
    expect(stored).toEqual({ ...info, size: bytes.length, source: SOURCE, parent: 'rp-parent' });
    expect(sink.streams).toEqual([
      { ...info, size: bytes.length, chunks: parent.chunks, source: SOURCE },
    ]);
    expect(writer.stats.bytesRead).toBe(0);
    expect(progressed).toBe(bytes.length);
    expect((await contents(sink.streams[0]!)).equals(bytes)).toBe(true);
    // Once in a point, like any stream.
    await expect(sink.reuseParent(info, () => true)).rejects.toThrow(/written twice/);
  });

  it('takes nothing when the source is refused, absent, or the stream is not the same', async () => {
    const bytes = randomBytes(100_000);
    const parent = await firstPoint(bytes, SOURCE);
    const unsourced = await firstPoint(bytes);
    expect(unsourced.source).toBeUndefined();
    const cases: Array<[string, StreamRecord[], (s: string) => boolean]> = [
      ['the driver refuses the source', [parent], () => false],
      ['the parent recorded no source', [unsourced], () => true],
      ['another kind', [{ ...parent, kind: 'volume-tar' }], () => true],
      ['another name', [{ ...parent, name: 'container/web/image' }], () => true],
      ['no such stream', [], () => true],
      [
        'a chunk no longer stored',
        [{ ...parent, chunks: [{ ...parent.chunks[0]!, id: '0'.repeat(64) }] }],
        () => true,
      ],
      ['chunks that do not add up', [{ ...parent, size: parent.size + 1 }], () => true],
    ];
    for (const [what, streams, accept] of cases) {
      const sink = new PointWriter(repo.writer(), () => undefined, parentOf(streams));
      expect(await sink.reuseParent(info, accept), what).toBeUndefined();
      expect(sink.streams, what).toEqual([]);
    }
    const orphan = new PointWriter(repo.writer(), () => undefined);
    expect(await orphan.reuseParent(info, () => true)).toBeUndefined();
  });
});
