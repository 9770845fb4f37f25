import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Lease, markGarbage, sweepGarbage } from '../../../../agents/repo/gc';
import { StaticKey } from '../../../../agents/repo/keys';
import { Repository } from '../../../../agents/repo/repository';
import {
  GC_PREFIX,
  manifestKey,
  packIdOfPackKey,
  PACKS_PREFIX,
} from '../../../../kernel/object-layout';
import { MiB, prngBytes } from '../../../fixtures/data';
import { MemoryStore } from '../../../fixtures/memory-store';

const opened: Repository[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((r) => r.close()));
});

async function setup() {
  const store = new MemoryStore();
  const key = randomBytes(32);
  const repo = await Repository.open({ store, keys: new StaticKey(key), workers: 1 });
  opened.push(repo);
  return { store, repo, key };
}

/** A point of one stream of `data`, committed (manifest written). */
async function point(repo: Repository, id: string, data: Buffer) {
  await repo.refresh();
  const writer = repo.writer();
  const stream = await writer.writeStream({ name: 's', kind: 'file' }, Readable.from([data]));
  await writer.flush();
  await repo.saveManifest(id, { version: 2, recoveryPointId: id, streams: [stream] });
  return { stream, writer };
}

async function keys(store: MemoryStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const info of store.list(prefix)) out.push(info.key);
  return out;
}

const TTL = 200;

describe('garbage collection', () => {
  it('with no lease held sweeps at once what only deleted points referenced', async () => {
    const { store, repo } = await setup();
    await point(repo, 'rp-a', prngBytes(2 * MiB, 1));
    await point(repo, 'rp-b', prngBytes(2 * MiB, 2));
    const packs = await keys(store, PACKS_PREFIX);
    expect(packs).toHaveLength(2);

    const dry = await markGarbage(repo, {
      jobId: 'p',
      deletePoints: ['rp-a'],
      dryRun: true,
      ttlMs: TTL,
    });
    expect(dry.candidates).toHaveLength(1);
    expect(dry.markId).toBeUndefined();
    expect(await keys(store, GC_PREFIX)).toEqual([]);
    expect(await store.exists(manifestKey('rp-a'))).toBe(true);

    const mark = await markGarbage(repo, {
      jobId: 'p',
      deletePoints: ['rp-a'],
      dryRun: false,
      ttlMs: TTL,
    });
    expect(mark.heldBy).toEqual([]);
    expect(await store.exists(manifestKey('rp-a'))).toBe(false);
    const sweep = await sweepGarbage(repo, {
      markId: mark.markId!,
      heldBy: mark.heldBy,
      ttlMs: TTL,
    });
    expect(sweep).toMatchObject({ done: true, packsDeleted: 1, chunksDeleted: 2 });
    expect(await keys(store, PACKS_PREFIX)).toHaveLength(1);
    expect(await keys(store, GC_PREFIX)).toEqual([]);
  });

  it('waits for a lease held at the mark, and keeps a pack a held job committed over', async () => {
    const { store, repo } = await setup();
    const a = await point(repo, 'rp-a', prngBytes(2 * MiB, 1));
    const lease = await Lease.take(
      store,
      { jobId: 'job-b', kind: 'BACKUP', agent: 'x' },
      { ttlMs: TTL },
    );
    const mark = await markGarbage(repo, {
      jobId: 'p',
      deletePoints: ['rp-a'],
      dryRun: false,
      ttlMs: TTL,
    });
    expect(mark.heldBy.map((h) => h.jobId)).toEqual(['job-b']);
    expect(
      await sweepGarbage(repo, { markId: mark.markId!, heldBy: mark.heldBy, ttlMs: TTL }),
    ).toMatchObject({
      done: false,
      waitingFor: ['job-b'],
    });
    // The held job skipped rp-a's chunks (it saw them before the mark) and commits over them.
    await repo.saveManifest('rp-b', { version: 2, recoveryPointId: 'rp-b', streams: [a.stream] });
    await lease.end();
    const sweep = await sweepGarbage(repo, {
      markId: mark.markId!,
      heldBy: mark.heldBy,
      ttlMs: TTL,
    });
    expect(sweep).toMatchObject({ done: true, packsDeleted: 0, packsKept: 1 });
    await repo.refresh();
    for (const c of a.stream.chunks) expect(repo.index.has(c.id)).toBe(true);
  });

  it('treats a lease that stopped renewing for a ttl as dead', async () => {
    const { store, repo } = await setup();
    await point(repo, 'rp-a', prngBytes(MiB, 1));
    let now = Date.now();
    const clock = { now: () => now };
    const lease = await Lease.take(
      store,
      { jobId: 'job-b', kind: 'BACKUP', agent: 'x' },
      { ttlMs: 60_000, clock },
    );
    const mark = await markGarbage(repo, {
      jobId: 'p',
      deletePoints: ['rp-a'],
      dryRun: false,
      ttlMs: 60_000,
      clock,
    });
    expect(mark.heldBy).toHaveLength(1);
    now += 60_000;
    const sweep = await sweepGarbage(repo, {
      markId: mark.markId!,
      heldBy: mark.heldBy,
      ttlMs: 60_000,
      clock,
    });
    expect(sweep).toMatchObject({ done: true, packsDeleted: 1 });
    await expect(lease.confirm('commit')).rejects.toThrow(/lease lapsed/);
    await lease.end();
  });

  it('makes a writer that read the mark store again a chunk only a marked pack holds', async () => {
    const { repo } = await setup();
    const data = prngBytes(MiB, 7);
    await point(repo, 'rp-a', data);
    const mark = await markGarbage(repo, {
      jobId: 'p',
      deletePoints: ['rp-a'],
      dryRun: false,
      ttlMs: TTL,
    });
    const again = await point(repo, 'rp-c', data);
    expect(again.writer.stats.newChunks).toBe(again.stream.chunks.length);
    await sweepGarbage(repo, { markId: mark.markId!, heldBy: [], ttlMs: TTL });
    const back: Buffer[] = [];
    for await (const piece of repo.readStream(again.stream)) back.push(piece as Buffer);
    expect(Buffer.concat(back).equals(data)).toBe(true);
  });

  it('deletes nothing when a manifest cannot be read, and says which', async () => {
    const { store, repo } = await setup();
    await point(repo, 'rp-a', prngBytes(MiB, 1));
    await store.put(manifestKey('rp-junk'), Buffer.from('not a manifest'));
    await expect(
      markGarbage(repo, { jobId: 'p', deletePoints: ['rp-a'], dryRun: false, ttlMs: TTL }),
    ).rejects.toThrow(/stopped before deleting anything: the manifest of rp-junk cannot be read/);
    expect(await store.exists(manifestKey('rp-a'))).toBe(true);
  });

  it('drops marks left by a prune that never swept', async () => {
    const { store, repo } = await setup();
    await point(repo, 'rp-a', prngBytes(MiB, 1));
    await markGarbage(repo, { jobId: 'stopped', deletePoints: [], dryRun: false, ttlMs: TTL });
    await new Promise((r) => setTimeout(r, 5));
    const mark = await markGarbage(repo, {
      jobId: 'p',
      deletePoints: [],
      dryRun: false,
      ttlMs: TTL,
    });
    expect(await keys(store, GC_PREFIX)).toHaveLength(2);
    await sweepGarbage(repo, { markId: mark.markId!, heldBy: [], ttlMs: TTL });
    expect(await keys(store, GC_PREFIX)).toEqual([]);
  });

  describe('repack', () => {
    /**
     * One pack holding a small stream kept by rp-keep and a large one only rp-drop uses: once
     * rp-drop goes, the pack is mostly garbage.
     */
    async function mixedPack(repo: Repository, small = 512 * 1024, large = 3 * MiB) {
      await repo.refresh();
      const writer = repo.writer();
      const keptData = prngBytes(small, 11);
      const kept = await writer.writeStream({ name: 'k', kind: 'file' }, Readable.from([keptData]));
      const dropped = await writer.writeStream(
        { name: 'd', kind: 'file' },
        Readable.from([prngBytes(large, 12)]),
      );
      await writer.flush();
      await repo.saveManifest('rp-keep', {
        version: 2,
        recoveryPointId: 'rp-keep',
        streams: [kept],
      });
      await repo.saveManifest('rp-drop', {
        version: 2,
        recoveryPointId: 'rp-drop',
        streams: [kept, dropped],
      });
      return { kept, keptData, dropped };
    }

    async function read(repo: Repository, stream: Parameters<Repository['readStream']>[0]) {
      const back: Buffer[] = [];
      for await (const piece of repo.readStream(stream)) back.push(piece as Buffer);
      return Buffer.concat(back);
    }

    it('copies the kept chunks of a pack that is mostly garbage into a new pack and sweeps the old one', async () => {
      const { store, repo, key } = await setup();
      const { kept, keptData, dropped } = await mixedPack(repo);
      const [old] = await keys(store, PACKS_PREFIX);

      const dry = await markGarbage(repo, {
        jobId: 'p',
        deletePoints: ['rp-drop'],
        dryRun: true,
        ttlMs: TTL,
      });
      expect(dry).toMatchObject({
        repacked: [packIdOfPackKey(old!)],
        repackChunks: kept.chunks.length,
      });
      expect(dry.repackWritten).toBeGreaterThan(0);
      expect(dry.repackWritten).toBeLessThan(dry.repackedBytes / 4);
      expect(await keys(store, PACKS_PREFIX)).toEqual([old]);

      const mark = await markGarbage(repo, {
        jobId: 'p',
        deletePoints: ['rp-drop'],
        dryRun: false,
        ttlMs: TTL,
      });
      expect(mark.repacked).toHaveLength(1);
      expect(await keys(store, PACKS_PREFIX)).toHaveLength(2);
      const sweep = await sweepGarbage(repo, {
        markId: mark.markId!,
        heldBy: mark.heldBy,
        ttlMs: TTL,
      });
      expect(sweep).toMatchObject({
        done: true,
        packsDeleted: 1,
        packsRepacked: 1,
        chunksDeleted: dropped.chunks.length,
        packsKept: 0,
      });
      const left = await keys(store, PACKS_PREFIX);
      expect(left).toHaveLength(1);
      expect(left[0]).not.toBe(old);

      // A repository opened afresh reads the kept point from the new pack alone.
      const fresh = await Repository.open({ store, keys: new StaticKey(key), workers: 1 });
      opened.push(fresh);
      expect((await read(fresh, kept)).equals(keptData)).toBe(true);
      expect(sweep.done && sweep.bytesFreed).toBeGreaterThan(mark.repackWritten * 4);
    });

    it('leaves a pack alone whose kept chunks fill at least the threshold, and repacks nothing at 0', async () => {
      const { store, repo } = await setup();
      await mixedPack(repo, 3 * MiB, 512 * 1024);
      const mark = await markGarbage(repo, {
        jobId: 'p',
        deletePoints: ['rp-drop'],
        dryRun: false,
        ttlMs: TTL,
      });
      expect(mark.repacked).toEqual([]);
      expect(mark.candidates).toEqual([]);
      const { store: store2, repo: repo2 } = await setup();
      await mixedPack(repo2);
      const never = await markGarbage(repo2, {
        jobId: 'p',
        deletePoints: ['rp-drop'],
        dryRun: false,
        repackBelow: 0,
        ttlMs: TTL,
      });
      expect(never.repacked).toEqual([]);
      expect(await keys(store2, PACKS_PREFIX)).toHaveLength(1);
      expect(await keys(store, PACKS_PREFIX)).toHaveLength(1);
    });

    it('keeps a repacked pack whose garbage chunk a backup held at the mark committed', async () => {
      const { store, repo } = await setup();
      const { kept, keptData, dropped } = await mixedPack(repo);
      const lease = await Lease.take(
        store,
        { jobId: 'job-b', kind: 'BACKUP', agent: 'x', recoveryPointId: 'rp-b' },
        { ttlMs: TTL },
      );
      const mark = await markGarbage(repo, {
        jobId: 'p',
        deletePoints: ['rp-drop'],
        dryRun: false,
        ttlMs: TTL,
      });
      expect(mark.heldBy).toEqual([
        expect.objectContaining({ jobId: 'job-b', recoveryPointId: 'rp-b' }),
      ]);
      // The held backup skipped the dropped stream's chunks (it saw them before the mark).
      await repo.saveManifest('rp-b', { version: 2, recoveryPointId: 'rp-b', streams: [dropped] });
      await lease.end();
      const sweep = await sweepGarbage(repo, {
        markId: mark.markId!,
        heldBy: mark.heldBy,
        ttlMs: TTL,
      });
      expect(sweep).toMatchObject({ done: true, packsDeleted: 0, packsKept: 1 });
      await repo.refresh();
      expect((await read(repo, kept)).equals(keptData)).toBe(true);
      expect((await read(repo, dropped)).length).toBe(dropped.size);
    });

    it("keeps a repacked pack that a held backup's pack list names, for commit-point's check", async () => {
      const { store, repo } = await setup();
      const { kept } = await mixedPack(repo);
      const lease = await Lease.take(
        store,
        { jobId: 'job-b', kind: 'BACKUP', agent: 'x', recoveryPointId: 'rp-b' },
        { ttlMs: TTL },
      );
      // rp-b's agent listed the pack its chunks were in before it read the mark.
      await repo.savePackList('rp-b', [kept]);
      const mark = await markGarbage(repo, {
        jobId: 'p',
        deletePoints: ['rp-drop'],
        dryRun: false,
        ttlMs: TTL,
      });
      await repo.saveManifest('rp-b', { version: 2, recoveryPointId: 'rp-b', streams: [kept] });
      await lease.end();
      const sweep = await sweepGarbage(repo, {
        markId: mark.markId!,
        heldBy: mark.heldBy,
        ttlMs: TTL,
      });
      expect(sweep).toMatchObject({ done: true, packsDeleted: 0, packsKept: 1 });
      // The next prune, with the point committed and nothing held, repacks nothing again (its
      // chunks are already in the new pack) and sweeps it.
      const again = await markGarbage(repo, {
        jobId: 'q',
        deletePoints: [],
        dryRun: false,
        ttlMs: TTL,
      });
      expect(again).toMatchObject({ repackChunks: 0 });
      expect(again.repacked).toHaveLength(1);
      const swept = await sweepGarbage(repo, {
        markId: again.markId!,
        heldBy: again.heldBy,
        ttlMs: TTL,
      });
      expect(swept).toMatchObject({ done: true, packsDeleted: 1, packsRepacked: 1 });
      expect(await keys(store, PACKS_PREFIX)).toHaveLength(1);
    });

    it('makes a writer that read the mark rely on the copies, not the old pack', async () => {
      const { store, repo } = await setup();
      const { keptData } = await mixedPack(repo);
      const [old] = await keys(store, PACKS_PREFIX);
      await markGarbage(repo, { jobId: 'p', deletePoints: ['rp-drop'], dryRun: false, ttlMs: TTL });
      const again = await point(repo, 'rp-c', keptData);
      expect(again.writer.stats.newChunks).toBe(0);
      await repo.refresh();
      const loc = repo.index.get(again.stream.chunks[0]!.id)!;
      expect(repo.index.usable(again.stream.chunks[0]!.id)).toBe(true);
      expect(loc.pack).not.toBe(packIdOfPackKey(old!));
    });
  });
});
