import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Lease, markGarbage, sweepGarbage } from '../../../../agents/repo/gc';
import { StaticKey } from '../../../../agents/repo/keys';
import { Repository } from '../../../../agents/repo/repository';
import { GC_PREFIX, manifestKey, PACKS_PREFIX } from '../../../../kernel/object-layout';
import { MiB, prngBytes } from '../../../fixtures/data';
import { MemoryStore } from '../../../fixtures/memory-store';

const opened: Repository[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((r) => r.close()));
});

async function setup() {
  const store = new MemoryStore();
  const repo = await Repository.open({ store, keys: new StaticKey(randomBytes(32)), workers: 1 });
  opened.push(repo);
  return { store, repo };
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
});
