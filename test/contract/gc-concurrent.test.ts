/**
 * Garbage collection never loses a chunk (agents/repo/gc.ts), proved the hard way: rounds of
 * backups and prunes run at the same time through the agent's real runner, the path driver on
 * real files and a directory store, with seeded data and a seeded schedule, and a short lease
 * ttl so sweeps and lapses happen within seconds. Some backups stall with their lease renewals
 * failing past the ttl: the commit check must refuse them (and their retries succeed). Each
 * target's data changes one segment per backup, so its first packs turn mostly garbage while
 * their other chunks stay in use: the prunes repack them (copying the kept chunks into new
 * packs) under the same mark-then-sweep as whole packs, while restores of kept points run beside
 * them. At the end every point the "catalog" kept is restored and compared byte for byte with
 * what was backed up, and the store holds no pack that no kept point references.
 *
 * STOWAGE_GC_SEED=S replays a run; the figures are printed in one line.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Driver } from '../../agents/core/driver';
import { runBackup, runPrune, runRestore, type RunnerDeps } from '../../agents/core/runner';
import { createPathDriver } from '../../agents/drivers/path';
import { StaticKey } from '../../agents/repo/keys';
import { Repository } from '../../agents/repo/repository';
import { DirStore } from '../../agents/store/dir-store';
import type { ByteRange, ObjectInfo, ObjectStore } from '../../agents/store/store';
import { applyRetention } from '../../functions/core/retention';
import { LEASES_PREFIX, PACKS_PREFIX } from '../../kernel/object-layout';
import { silentLogger } from '../../kernel/logger';
import type { PruneMarkResult, PruneSweepResult } from '../../statemachines/contracts';
import { makePrng, MiB, prngBytes } from '../fixtures/data';
import { makeRun } from '../fixtures/runner';

const SEED = Number(process.env.STOWAGE_GC_SEED ?? 20261206);
const ROUNDS = 12;
const TARGETS = 3;
const LEASE_TTL_MS = 400;
const SEGMENT = 512 * 1024;
const SEGMENTS = 6;

/**
 * A directory store whose every call waits a seeded 0-7 ms, so backups and prunes interleave
 * differently at every step; puts of the leases of `stalled` jobs fail (their renewals lapse).
 */
class JitteryStore implements ObjectStore {
  readonly stalled = new Set<string>();
  constructor(
    private readonly inner: DirStore,
    private readonly next: () => number,
  ) {}
  private async jitter() {
    await new Promise((r) => setTimeout(r, Math.abs(this.next()) % 8));
  }
  private readonly leasesTaken = new Set<string>();
  async put(key: string, body: Readable | Buffer): Promise<void> {
    await this.jitter();
    if (key.startsWith(LEASES_PREFIX)) {
      const lease = key.split('/')[1]!;
      const renewal = this.leasesTaken.has(lease);
      this.leasesTaken.add(lease);
      if (renewal && [...this.stalled].some((jobId) => lease.startsWith(jobId))) {
        throw new Error('simulated store outage for this job');
      }
    }
    return this.inner.put(key, body);
  }
  async get(key: string, range?: ByteRange): Promise<Readable> {
    await this.jitter();
    return this.inner.get(key, range);
  }
  getInto(key: string, range: ByteRange, into: Uint8Array): Promise<void> {
    return this.inner.getInto(key, range, into);
  }
  exists(key: string): Promise<boolean> {
    return this.inner.exists(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    await this.jitter();
    yield* this.inner.list(prefix);
  }
  async delete(key: string): Promise<void> {
    await this.jitter();
    return this.inner.delete(key);
  }
  deletePrefix(prefix: string): Promise<void> {
    return this.inner.deletePrefix(prefix);
  }
}

/** Sources whose next backup stalls (see the driver in beforeAll). */
const stalledSources = new Set<string>();

interface Committed {
  recoveryPointId: string;
  target: string;
  createdAt: string;
  bytesRead: number;
  streams: unknown[];
  sha256: string;
  bytes: Buffer;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('garbage collection under concurrent backups', () => {
  let dir: string;
  let repo: Repository;
  let store: JitteryStore;
  let deps: RunnerDeps;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-gc-'));
    store = new JitteryStore(new DirStore(join(dir, 'store')), makePrng(SEED ^ 0x5a5a));
    repo = await Repository.open({ store, keys: new StaticKey(randomBytes(32)), workers: 2 });
    // The path driver, paused past the lease ttl after its streams for a stalled source: the
    // window between relying on chunks and committing them.
    const path = createPathDriver();
    const driver: Driver = Object.assign(Object.create(path) as Driver, {
      backup: async (...args: Parameters<Driver['backup']>) => {
        const outcome = await path.backup(...args);
        if (stalledSources.has(args[0])) await sleep(LEASE_TTL_MS * 2.5);
        return outcome;
      },
    });
    deps = {
      agent: 'local',
      drivers: new Map([['path', driver]]),
      repository: async () => repo,
      log: silentLogger,
      leaseTtlMs: LEASE_TTL_MS,
    };
  });

  afterAll(async () => {
    await repo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('restores every kept point byte for byte after seeded rounds of backups racing prunes', async () => {
    const prng = makePrng(SEED);
    const rand = (n: number) => Math.abs(prng()) % n;
    const sources = Array.from({ length: TARGETS }, (_, t) => join(dir, `src-${t}`));
    const contents = sources.map((_, t) =>
      Array.from({ length: SEGMENTS }, (_, s) => prngBytes(SEGMENT, SEED + t * 100 + s)),
    );
    // Every target shares one segment with the others: dedup across targets.
    for (const c of contents) c[0] = prngBytes(SEGMENT, SEED - 1);
    let catalog: Committed[] = [];
    let seq = 0;
    const figures = {
      rounds: ROUNDS,
      backups: 0,
      refused: 0,
      pointsDeleted: 0,
      packsDeleted: 0,
      packsRepacked: 0,
      chunksCopied: 0,
      restoresDuring: 0,
      chunksDeleted: 0,
      bytesFreed: 0,
      sweepWaits: 0,
    };

    /**
     * Points the next prune deletes besides what retention expires: attempts refused before a
     * commit (their manifest may be stored), as the prune plan hands the mark every ended
     * attempt without a catalog point, and points a mark kept because a restore read them then
     * (the plan keeps those until the next prune).
     */
    const pending = new Set<string>();

    /** A backup as the workflow runs it: the agent's task, retried on TransientError, then committed. */
    const backup = async (t: number, stall: boolean) => {
      const n = ++seq;
      const seg = rand(SEGMENTS - 1) + 1;
      contents[t]![seg] = prngBytes(SEGMENT + rand(4096), SEED + 7919 * n);
      const bytes = Buffer.concat(contents[t]!);
      await writeFile(sources[t]!, bytes);
      const jobId = `job-${n}-${t}`;
      const recoveryPointId = `rp-${String(n).padStart(4, '0')}`;
      for (let attempt = 1; ; attempt++) {
        const stalled = stall && attempt === 1;
        if (stalled) store.stalled.add(jobId);
        try {
          const task = {
            kind: 'BACKUP' as const,
            jobId,
            itemIndex: 0,
            recoveryPointId: attempt === 1 ? recoveryPointId : `${recoveryPointId}-r${attempt}`,
            target: `path:${sources[t]}`,
            options: {},
          };
          if (stalled) stalledSources.add(sources[t]!);
          const result = await runBackup(deps, task, makeRun()).finally(() => {
            store.stalled.delete(jobId);
            stalledSources.delete(sources[t]!);
          });
          catalog.push({
            recoveryPointId: task.recoveryPointId,
            target: task.target,
            createdAt: result.startedAt,
            bytesRead: result.bytesRead,
            streams: result.streams,
            sha256: sha(bytes),
            bytes,
          });
          figures.backups++;
          return;
        } catch (err) {
          if ((err as Error).name !== 'TransientError' || attempt >= 3) throw err;
          figures.refused++;
          pending.add(recoveryPointId + (attempt === 1 ? '' : `-r${attempt}`));
        }
      }
    };

    /** A prune as the workflow runs it: retention (keep-last 2), catalog first, then mark and sweep. */
    const prune = async (n: number) => {
      const decisions = applyRetention(
        catalog,
        [
          {
            name: 'p',
            targets: sources.map((s) => `path:${s}`),
            timezone: 'UTC',
            rules: { keepLast: 2 },
          },
        ],
        new Date(),
      );
      const expired = new Set(decisions.filter((d) => !d.keep).map((d) => d.recoveryPointId));
      const handed = [...pending];
      pending.clear();
      catalog = catalog.filter((p) => !expired.has(p.recoveryPointId));
      const mark = (await runPrune(
        deps,
        {
          kind: 'PRUNE',
          jobId: `prune-${n}`,
          target: 'repository',
          phase: 'mark',
          dryRun: false,
          deletePoints: [...expired, ...handed],
          repackBelow: 50,
        },
        makeRun(),
      )) as PruneMarkResult;
      figures.pointsDeleted += mark.pointsDeleted.length;
      for (const { recoveryPointId } of mark.pointsKept) pending.add(recoveryPointId);
      figures.chunksCopied += mark.repackChunks ?? 0;
      for (;;) {
        const sweep = (await runPrune(
          deps,
          {
            kind: 'PRUNE',
            jobId: `prune-${n}`,
            target: 'repository',
            phase: 'sweep',
            markId: mark.markId!,
            heldBy: mark.heldBy,
          },
          makeRun(),
        )) as PruneSweepResult;
        if (sweep.done) {
          figures.packsDeleted += sweep.packsDeleted;
          figures.packsRepacked += sweep.packsRepacked ?? 0;
          figures.chunksDeleted += sweep.chunksDeleted;
          figures.bytesFreed += sweep.bytesFreed;
          return;
        }
        figures.sweepWaits++;
        await sleep(LEASE_TTL_MS / 4);
      }
    };

    /** Restores a point as the workflow runs it and compares it with what was backed up. */
    const restore = async (point: Committed, as: string) => {
      const dest = join(dir, `restored-${as}-${point.recoveryPointId}`);
      await runRestore(
        deps,
        {
          kind: 'RESTORE',
          jobId: `restore-${as}-${point.recoveryPointId}`,
          recoveryPointId: point.recoveryPointId,
          source: point.target,
          target: `path:${dest}`,
          inPlace: false,
          options: {},
        },
        makeRun(),
      );
      const back = await readFile(dest);
      await rm(dest, { force: true });
      expect(sha(back), point.recoveryPointId).toBe(point.sha256);
      expect(back.equals(point.bytes)).toBe(true);
    };

    for (let round = 0; round < ROUNDS; round++) {
      const work: Array<Promise<void>> = [];
      // A restore of a target's newest point beside the round's backups and prune: keep-last 2
      // keeps it (a round backs each target up at most once), a repack may move its chunks.
      const newest = catalog.filter((p) => p.target === `path:${sources[rand(TARGETS)]}`).at(-1);
      if (newest) {
        work.push(
          sleep(rand(40)).then(async () => {
            await restore(newest, `r${round}`);
            figures.restoresDuring++;
          }),
        );
      }
      // Distinct targets: two backups of one source at once would race on its file.
      const order = sources.map((_, t) => t).sort(() => (rand(2) === 0 ? -1 : 1));
      for (const t of order.slice(0, 1 + rand(TARGETS))) {
        const stall = rand(5) === 0;
        work.push(sleep(rand(30)).then(() => backup(t, stall)));
      }
      work.push(sleep(rand(60)).then(() => prune(round)));
      await Promise.all(work);
    }
    // A last prune with nothing running and no lease live (a stalled attempt's lease, whose end
    // could not be written, lapses after the ttl; a mark that still saw it keeps the packs its
    // point named, by design, for the next prune): keep-last 2 of every target, no garbage left.
    await sleep(LEASE_TTL_MS * 2);
    await prune(ROUNDS);

    const size = async (prefix: string) => {
      let n = 0;
      for await (const info of store.list(prefix)) n += info.size;
      return n;
    };
    const storedPacks = await size(PACKS_PREFIX);

    // Every kept point comes back whole.
    let restored = 0;
    for (const point of catalog) {
      await restore(point, 'end');
      restored++;
    }
    // Nothing unreferenced is left behind: every pack holds a chunk of a kept point.
    const referenced = new Set<string>();
    for (const point of catalog) {
      const m = await repo.loadManifest<{ streams: Array<{ chunks: Array<{ id: string }> }> }>(
        point.recoveryPointId,
      );
      for (const s of m.streams) for (const c of s.chunks) referenced.add(c.id);
    }
    await repo.refresh();
    for (const [pack, index] of repo.index.packIndexes()) {
      expect(
        index.blobs.some((b) => referenced.has(b.id)),
        `pack ${pack}`,
      ).toBe(true);
    }

    const perTarget = new Map<string, number>();
    for (const p of catalog) perTarget.set(p.target, (perTarget.get(p.target) ?? 0) + 1);
    expect([...perTarget.values()].every((n) => n <= 2)).toBe(true);
    expect(figures.pointsDeleted).toBeGreaterThan(0);
    expect(figures.packsDeleted).toBeGreaterThan(0);
    expect(figures.packsRepacked).toBeGreaterThan(0);
    console.log(
      `gc concurrent figures: seed ${SEED}, rounds ${figures.rounds}, backups ${figures.backups}, commits refused ${figures.refused}, points deleted ${figures.pointsDeleted}, points kept ${catalog.length}, packs deleted ${figures.packsDeleted} (repacked ${figures.packsRepacked}, ${figures.chunksCopied} chunks copied), chunks deleted ${figures.chunksDeleted}, bytes freed ${(figures.bytesFreed / MiB).toFixed(1)} MiB, sweeps that waited ${figures.sweepWaits}, packs stored ${(storedPacks / MiB).toFixed(1)} MiB, restores verified ${restored}/${catalog.length} (and ${figures.restoresDuring} during the rounds)`,
    );
  });
});
