/**
 * PointWriter.writeBlocks (core/points.ts): a block device's stream, cut at every block as well
 * as where the chunker cuts, and the blocks a change tracker says are unchanged taken from the
 * parent point's stream without being read, when (and only when) that is safe: the parent's
 * stream is block-aligned with the same block size, each block's chunks add up to the block,
 * and every chunk is still stored.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Area, ByteReader } from '../../../../agents/core/driver';
import { PointWriter, type ParentPoint } from '../../../../agents/core/points';
import { StaticKey } from '../../../../agents/repo/keys';
import { Repository } from '../../../../agents/repo/repository';
import type { StreamRecord } from '../../../../agents/repo/types';
import { MemoryStore } from '../../../fixtures/memory-store';

const MiB = 1024 * 1024;
const BLOCK = 4 * MiB;
const info = { name: 'disk/2000', kind: 'vmdk-raw' };

/** A reader of the areas of `disk`, one after the other, noting what it was asked for. */
function opener(disk: Buffer, asked: Area[][]) {
  return (areas: readonly Area[]): Promise<ByteReader> => {
    asked.push([...areas]);
    const bytes = Buffer.concat(areas.map((a) => disk.subarray(a.start, a.start + a.length)));
    let at = 0;
    return Promise.resolve(async (into: Uint8Array) => {
      const n = Math.min(into.length, bytes.length - at);
      into.set(bytes.subarray(at, at + n));
      at += n;
      return n;
    });
  };
}

async function contents(repo: Repository, record: StreamRecord): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of repo.readStream(record)) parts.push(piece as Buffer);
  return Buffer.concat(parts);
}

async function write(
  repo: Repository,
  disk: Buffer,
  parent: ParentPoint | undefined,
  unchanged?: (start: number, length: number) => boolean,
) {
  const writer = repo.writer();
  let progressed = 0;
  const sink = new PointWriter(writer, (n) => (progressed += n), parent);
  const asked: Area[][] = [];
  const stored = await sink.writeBlocks(info, {
    size: disk.length,
    blockBytes: BLOCK,
    ...(unchanged ? { unchanged } : {}),
    open: opener(disk, asked),
  });
  await writer.flush();
  return { stored, record: sink.streams[0]!, asked, progressed };
}

const parentOf = (record: StreamRecord): ParentPoint => ({
  recoveryPointId: 'rp-parent',
  streams: [record],
  metadata: {},
  read: () => {
    throw new Error('not read');
  },
});

describe('writing a block device block by block', () => {
  it('cuts at every block, takes the unchanged blocks from the parent, reads the others', async () => {
    const repo = await Repository.open({
      store: new MemoryStore(),
      keys: new StaticKey(randomBytes(32)),
      workers: 1,
    });
    try {
      // 5 blocks and a half: the last one short.
      const disk = randomBytes(5 * BLOCK + MiB);
      const first = await write(repo, disk, undefined);
      expect(first.stored).toMatchObject({
        size: disk.length,
        bytesRead: disk.length,
        bytesReused: 0,
      });
      expect(first.asked).toEqual([[{ start: 0, length: disk.length }]]);
      expect(first.record.blockBytes).toBe(BLOCK);
      // A block no larger than the chunker's largest chunk is one chunk, not scanned for cuts.
      expect(first.record.chunks.map((c) => c.length)).toEqual([...Array(5).fill(BLOCK), MiB]);
      let offset = 0;
      for (const c of first.record.chunks) {
        expect(Math.floor(offset / BLOCK)).toBe(Math.floor((offset + c.length - 1) / BLOCK));
        offset += c.length;
      }
      expect((await contents(repo, first.record)).equals(disk)).toBe(true);

      // Blocks 1 and 4 change; the tracker says so.
      const next = Buffer.from(disk);
      randomBytes(4096).copy(next, BLOCK + 100);
      randomBytes(10).copy(next, 4 * BLOCK + 5);
      const changed = [1, 4];
      const second = await write(
        repo,
        next,
        parentOf(first.record),
        (start) => !changed.includes(start / BLOCK),
      );
      expect(second.asked).toEqual([
        [
          { start: BLOCK, length: BLOCK },
          { start: 4 * BLOCK, length: BLOCK },
        ],
      ]);
      expect(second.stored).toMatchObject({
        bytesRead: 2 * BLOCK,
        bytesReused: disk.length - 2 * BLOCK,
        parent: 'rp-parent',
      });
      // The job's progress covers the whole disk, the blocks taken from the parent included: a
      // bar against the disk's capacity ends at 100 %.
      expect(first.progressed).toBe(disk.length);
      expect(second.progressed).toBe(disk.length);
      expect((await contents(repo, second.record)).equals(next)).toBe(true);

      // A parent cut otherwise (a chunk across a block edge) gives nothing: all is read.
      const misaligned: StreamRecord = {
        ...first.record,
        chunks: [
          { ...first.record.chunks[0]!, length: first.record.chunks[0]!.length + 1 },
          ...first.record.chunks.slice(1),
        ],
      };
      const third = await write(repo, next, parentOf(misaligned), () => true);
      expect(third.stored.bytesReused).toBe(0);
      expect((await contents(repo, third.record)).equals(next)).toBe(true);

      // A parent whose chunk is no longer stored gives nothing for that block.
      const gone: StreamRecord = {
        ...second.record,
        chunks: second.record.chunks.map((c, i) => (i === 0 ? { ...c, id: '0'.repeat(64) } : c)),
      };
      const fourth = await write(repo, next, parentOf(gone), () => true);
      expect(fourth.asked).toEqual([[{ start: 0, length: BLOCK }]]);
      expect(fourth.stored.bytesRead).toBe(BLOCK);
      expect((await contents(repo, fourth.record)).equals(next)).toBe(true);

      // Another block size in the parent: nothing taken.
      const other = await write(
        repo,
        next,
        parentOf({ ...second.record, blockBytes: MiB }),
        () => true,
      );
      expect(other.stored.bytesReused).toBe(0);
    } finally {
      await repo.close();
    }
  });

  it('cuts blocks larger than a chunk where the chunker cuts, inside each block', async () => {
    const repo = await Repository.open({
      store: new MemoryStore(),
      keys: new StaticKey(randomBytes(32)),
      workers: 1,
    });
    try {
      const disk = randomBytes(2 * 2 * BLOCK + 3 * MiB);
      const writer = repo.writer();
      const sink = new PointWriter(writer, () => undefined);
      await sink.writeBlocks(info, {
        size: disk.length,
        blockBytes: 2 * BLOCK,
        open: opener(disk, []),
      });
      await writer.flush();
      const record = sink.streams[0]!;
      expect(record.chunks.length).toBeGreaterThan(3);
      let offset = 0;
      for (const c of record.chunks) {
        expect(c.length).toBeLessThanOrEqual(BLOCK);
        expect(Math.floor(offset / (2 * BLOCK))).toBe(
          Math.floor((offset + c.length - 1) / (2 * BLOCK)),
        );
        offset += c.length;
      }
      expect((await contents(repo, record)).equals(disk)).toBe(true);
    } finally {
      await repo.close();
    }
  });

  it('fails when the reader ends before the blocks it was asked for', async () => {
    const repo = await Repository.open({
      store: new MemoryStore(),
      keys: new StaticKey(randomBytes(32)),
      workers: 1,
    });
    try {
      const writer = repo.writer();
      const sink = new PointWriter(writer, () => undefined);
      await expect(
        sink.writeBlocks(info, {
          size: 2 * BLOCK,
          blockBytes: BLOCK,
          open: () => Promise.resolve(() => Promise.resolve(0)),
        }),
      ).rejects.toThrow('ended');
      expect(sink.streams).toEqual([]);
    } finally {
      await repo.close();
    }
  });
});
