/**
 * Garbage collection that never deletes a chunk a running or retried job relies on.
 *
 * Why it is hard: a writer skips every chunk it finds in the index, writes its packs before
 * their indexes and its manifest last, so for as long as a backup runs, the chunks it relies on
 * (the ones it skipped and the ones it stored) are referenced by no manifest. A collector that
 * deleted whatever no manifest references would break every backup running across it.
 *
 * The protocol (after kopia's and Proxmox Backup Server's maintenance):
 *
 * 1. Leases. Every task that reads or writes the repository (backup, restore, verify) first
 *    writes a lease, `leases/<leaseId>/<ms>`, and renews it every ttl/3 with a new object
 *    (stores only create); it writes `leases/<leaseId>/end` when it ends. A lease is live while
 *    it has no end and its newest renewal is younger than the ttl. Only THEN does the task read
 *    the index and the marks (step 2).
 * 2. Mark. The collector lists the manifests, reads every chunk id they reference (an unreadable
 *    manifest stops it: it deletes nothing rather than guess), and takes as candidates the packs
 *    none of whose chunks are referenced (and packs that have no index: a writer died between
 *    the two puts). It writes the candidates as a sealed mark, `gc/<markId>`, and only then lists
 *    the live leases: `heldBy`. A task whose lease is not in `heldBy` wrote it after the mark
 *    existed, so it read the mark, and a writer never skips a chunk held only by a condemned
 *    pack (RepositoryIndex.usable): it stores the chunk again in a new pack.
 * 3. Sweep. Once every lease of `heldBy` has ended or expired (the grace: at most the longest
 *    job, or one ttl after its agent died), the collector reads the manifests again and deletes
 *    each candidate pack that is still unreferenced (a backup of `heldBy` may have committed a
 *    point that uses it): its index first, then the pack, so no reader ever finds an index entry
 *    whose pack is gone. With no lease held at the mark, the sweep follows at once.
 * 4. Commit. Before a backup writes its manifest it checks that its lease never lapsed (renewing
 *    it), reloads the index (deleted packs drop out of it) and refuses, with a TransientError,
 *    a point any of whose chunks is no longer stored; after the manifest it checks the lease
 *    again. So an agent frozen past its ttl while a sweep ran never commits a point with holes:
 *    its job fails or is retried, and the retry stores the chunks again.
 *
 * 5. Repack. A pack whose chunks the manifests still reference, but which is mostly garbage
 *    (its referenced blobs are less than `repackBelow` of its bytes, 50 % by default), is
 *    repacked by the mark: before the mark object is written, the referenced chunks that no
 *    other kept pack holds are copied, sealed blobs as they are and each checked against its id,
 *    into new packs (each stored before its index, as a writer does). The old pack then joins
 *    the mark's candidates and goes through steps 2-3 like an unreferenced one: writers that
 *    start after the mark read the chunks from the new packs (RepositoryIndex prefers a pack no
 *    mark condemns) and never rely on the old one; tasks that started before it hold leases the
 *    sweep waits for. The sweep's rule is one for both kinds: a candidate goes only if every
 *    chunk the manifests reference NOW that it holds is also stored in a pack that is not a
 *    candidate (a backup of `heldBy` may have committed a point over a chunk the repack did not
 *    copy), and it is not named in the pack list of a point a `heldBy` backup wrote (commit-point
 *    checks those lists after the agent's lease ended). An agent that dies between the copies
 *    and the mark leaves chunks stored twice, which the next mark finds: a repack candidate whose
 *    chunks are all stored elsewhere copies nothing.
 *
 * Expired points are removed the same way: the prune workflow deletes their catalog items, then
 * the mark deletes their manifests (never one a live lease reads) before it computes
 * references. Dry runs compute the same lists and write nothing.
 *
 * Deletes are plain deletes: with S3 versioning and Object Lock they only place delete markers
 * (nothing locked is destroyed; lifecycle frees the old versions later), repacked packs
 * included.
 */
import { randomBytes } from 'node:crypto';
import {
  GC_PREFIX,
  gcMarkKey,
  indexKey,
  INDEX_PREFIX,
  isPackListKey,
  LEASES_PREFIX,
  leaseEndKey,
  leaseKey,
  packIdOfIndexKey,
  packIdOfPackKey,
  packKey,
  parseLeaseKey,
  pointIdOfManifestKey,
  pointPrefix,
  POINTS_PREFIX,
  PACKS_PREFIX,
} from '../../kernel/object-layout';
import { IntegrityError, TransientError } from '../../kernel/errors';
import type { ObjectStore } from '../store/store';
import { getBuffer, ObjectExists, ObjectNotFound } from '../store/store';
import { MARK_PURPOSE, type GcMark } from './gc-marks';
import type { Repository } from './repository';
import type { PackIndex } from './repository-index';

/** Ten minutes: a renewal every 200 s outlives a slow store; an agent that died holds a mark this long. */
export const DEFAULT_LEASE_TTL_MS = 10 * 60_000;

/**
 * A pack whose referenced blobs fill less than this share of it is repacked: at 50 % a repack
 * copies at most as many bytes as it frees (restic's prune repacks below its --max-unused 5 %,
 * trading more copying for less waste; here copies are uploads from the agent's site).
 */
export const DEFAULT_REPACK_BELOW = 0.5;

export interface LeaseInfo {
  jobId: string;
  kind: string;
  agent: string;
  /** The point the task writes or reads. */
  recoveryPointId?: string;
}

export interface Clock {
  now(): number;
}

const systemNow: Clock = { now: () => Date.now() };

/**
 * A running task's lease. `take` writes it; it renews itself every ttl/3 until `end`. `confirm`
 * is the commit check: it throws unless the lease never lapsed, and renews it.
 */
export class Lease {
  private lastRenewal: number;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;

  private constructor(
    private readonly store: ObjectStore,
    readonly leaseId: string,
    private readonly info: LeaseInfo,
    readonly ttlMs: number,
    private readonly clock: Clock,
    at: number,
    onRenewError: (err: unknown) => void,
  ) {
    this.lastRenewal = at;
    this.timer = setInterval(
      () => {
        this.renew().catch(onRenewError);
      },
      Math.max(50, Math.floor(ttlMs / 3)),
    );
    this.timer.unref?.();
  }

  static async take(
    store: ObjectStore,
    info: LeaseInfo,
    options: { ttlMs?: number; clock?: Clock; onRenewError?: (err: unknown) => void } = {},
  ): Promise<Lease> {
    const clock = options.clock ?? systemNow;
    const leaseId = `${info.jobId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 80)}-${randomBytes(6).toString('hex')}`;
    const at = clock.now();
    await store.put(leaseKey(leaseId, at), Buffer.from(JSON.stringify(info)));
    return new Lease(
      store,
      leaseId,
      info,
      options.ttlMs ?? DEFAULT_LEASE_TTL_MS,
      clock,
      at,
      options.onRenewError ?? (() => undefined),
    );
  }

  /** Writes a new renewal (a no-op once ended). */
  async renew(): Promise<void> {
    if (this.ended) return;
    let at = this.clock.now();
    if (at <= this.lastRenewal) at = this.lastRenewal + 1;
    try {
      await this.store.put(leaseKey(this.leaseId, at), Buffer.from(JSON.stringify(this.info)));
    } catch (err) {
      if (!(err instanceof ObjectExists)) throw err;
    }
    this.lastRenewal = Math.max(this.lastRenewal, at);
  }

  /** Milliseconds since the newest renewal this lease wrote. */
  get age(): number {
    return this.clock.now() - this.lastRenewal;
  }

  /**
   * Throws a TransientError if the lease lapsed (no renewal for a ttl: a sweep may have run as
   * if this task were dead); otherwise renews it.
   */
  async confirm(what: string): Promise<void> {
    if (this.age >= this.ttlMs) {
      throw new TransientError(
        `${what}: this task's repository lease lapsed (no renewal for ${Math.round(this.age / 1000)} s, ttl ${Math.round(this.ttlMs / 1000)} s), so garbage collection may have removed chunks it relies on; the retry stores them again`,
      );
    }
    await this.renew();
  }

  /** Stops renewing and records the end; idempotent. Failures are left to the ttl. */
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.timer);
    await this.store.put(leaseEndKey(this.leaseId), Buffer.from('{}')).catch(() => undefined);
  }
}

export interface LeaseState {
  leaseId: string;
  /** The newest renewal, epoch ms. */
  last: number;
  ended: boolean;
  keys: string[];
  info?: LeaseInfo;
}

/** Every lease in the store, with its newest renewal and whether it ended. */
export async function listLeases(store: ObjectStore): Promise<Map<string, LeaseState>> {
  const leases = new Map<string, LeaseState>();
  for await (const { key } of store.list(LEASES_PREFIX)) {
    const parsed = parseLeaseKey(key);
    if (!parsed) continue; // junk under leases/ never extends a lease
    let state = leases.get(parsed.leaseId);
    if (!state) {
      state = { leaseId: parsed.leaseId, last: 0, ended: false, keys: [] };
      leases.set(parsed.leaseId, state);
    }
    state.keys.push(key);
    if (parsed.at === 'end') state.ended = true;
    else state.last = Math.max(state.last, parsed.at);
  }
  return leases;
}

function isLive(lease: LeaseState, now: number, ttlMs: number): boolean {
  return !lease.ended && now - lease.last < ttlMs;
}

async function leaseInfo(store: ObjectStore, lease: LeaseState): Promise<LeaseInfo | undefined> {
  try {
    const info = JSON.parse(
      (await getBuffer(store, leaseKey(lease.leaseId, lease.last))).toString(),
    ) as LeaseInfo;
    return info && typeof info.jobId === 'string' ? info : undefined;
  } catch {
    return undefined;
  }
}

/** The live leases, each with what it said about its task. */
export async function liveLeases(
  store: ObjectStore,
  now: number,
  ttlMs: number,
): Promise<LeaseState[]> {
  const live = [...(await listLeases(store)).values()].filter((l) => isLive(l, now, ttlMs));
  for (const lease of live) {
    const info = await leaseInfo(store, lease);
    if (info) lease.info = info;
  }
  return live;
}

const MANIFEST_LOADS = 8;

/** Every chunk id the manifests reference, except those of `except`; size of each manifest. */
async function referencedChunks(
  repo: Repository,
  except: ReadonlySet<string> = new Set(),
): Promise<{ chunks: Set<string>; manifests: Map<string, number> }> {
  const manifests = new Map<string, number>();
  for await (const info of repo.store.list(POINTS_PREFIX)) {
    const id = pointIdOfManifestKey(info.key);
    if (id) manifests.set(id, info.size);
  }
  const chunks = new Set<string>();
  const ids = [...manifests.keys()].filter((id) => !except.has(id));
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++]!;
      let manifest: { streams?: Array<{ chunks?: Array<{ id?: unknown }> }> };
      try {
        manifest = await repo.loadManifest(id);
      } catch (err) {
        if (err instanceof ObjectNotFound) continue; // deleted since the listing
        throw new IntegrityError(
          `garbage collection stopped before deleting anything: the manifest of ${id} cannot be read (${(err as Error).message}); run stowage verify ${id}, and delete the point if it is damaged`,
          { cause: err },
        );
      }
      for (const stream of manifest.streams ?? []) {
        for (const chunk of stream.chunks ?? []) {
          if (typeof chunk.id === 'string') chunks.add(chunk.id);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(MANIFEST_LOADS, ids.length) }, worker));
  return { chunks, manifests };
}

async function sizes(
  store: ObjectStore,
  prefix: string,
  idOf: (key: string) => string | undefined,
) {
  const out = new Map<string, number>();
  for await (const info of store.list(prefix)) {
    const id = idOf(info.key);
    if (id) out.set(id, info.size);
  }
  return out;
}

export interface MarkOptions {
  jobId: string;
  /** Points whose manifests go (their catalog items are already deleted). */
  deletePoints: readonly string[];
  dryRun: boolean;
  /** Repack packs whose referenced bytes are below this share of their size (0: never); default DEFAULT_REPACK_BELOW. */
  repackBelow?: number;
  ttlMs?: number;
  clock?: Clock;
}

export interface MarkResult {
  /** Absent in a dry run (nothing was written). */
  markId?: string;
  pointsDeleted: string[];
  /** Points asked for that a running job reads: their manifests stay until the next prune. */
  pointsKept: Array<{ recoveryPointId: string; jobId: string }>;
  /**
   * Packs the sweep deletes if they are still garbage then: those no manifest references, and
   * those repacked.
   */
  candidates: string[];
  /** Bytes of the unreferenced packs and their indexes. */
  candidateBytes: number;
  manifestBytes: number;
  /** Packs mostly garbage whose referenced chunks were (dry: would be) copied into new packs. */
  repacked: string[];
  /** Bytes of the repacked packs and their indexes. */
  repackedBytes: number;
  /** Chunks copied (dry: to copy) and their stored bytes (dry: without the new indexes). */
  repackChunks: number;
  repackWritten: number;
  /** Live leases at the mark: the sweep waits until each has ended or expired. */
  heldBy: HeldLease[];
}

/** A lease live at the mark; a backup's names the point whose pack list the sweep respects. */
export interface HeldLease {
  leaseId: string;
  jobId: string;
  kind: string;
  recoveryPointId?: string;
}

/**
 * The chunk ids stored in a pack that is not in `condemned` and whose pack object and index are
 * both listed: the chunks a candidate may go without.
 */
function storedOutside(
  indexes: ReadonlyMap<string, PackIndex>,
  packSizes: ReadonlyMap<string, number>,
  condemned: ReadonlySet<string>,
): Set<string> {
  const ids = new Set<string>();
  for (const [pack, index] of indexes) {
    if (condemned.has(pack) || !packSizes.has(pack)) continue;
    for (const b of index.blobs) ids.add(b.id);
  }
  return ids;
}

/** The packs named in the pack lists of these points (plain text, one id a line). */
async function packsListedBy(store: ObjectStore, points: readonly string[]): Promise<Set<string>> {
  const packs = new Set<string>();
  for (const id of new Set(points)) {
    for await (const { key } of store.list(pointPrefix(id))) {
      if (!isPackListKey(id, key)) continue;
      let text: string;
      try {
        text = (await getBuffer(store, key)).toString();
      } catch (err) {
        if (err instanceof ObjectNotFound) continue;
        throw err;
      }
      for (const line of text.split('\n')) if (line) packs.add(line);
    }
  }
  return packs;
}

export async function markGarbage(repo: Repository, options: MarkOptions): Promise<MarkResult> {
  const clock = options.clock ?? systemNow;
  const ttlMs = options.ttlMs ?? DEFAULT_LEASE_TTL_MS;
  const store = repo.store;
  const reading = new Map<string, string>();
  for (const lease of await liveLeases(store, clock.now(), ttlMs)) {
    if (lease.info?.recoveryPointId) reading.set(lease.info.recoveryPointId, lease.info.jobId);
  }
  const pointsKept = options.deletePoints
    .filter((id) => reading.has(id))
    .map((id) => ({ recoveryPointId: id, jobId: reading.get(id)! }));
  const going = new Set(options.deletePoints.filter((id) => !reading.has(id)));
  const { chunks, manifests } = await referencedChunks(repo, going);
  const pointsDeleted = [...going].filter((id) => manifests.has(id));
  const manifestBytes = pointsDeleted.reduce((n, id) => n + manifests.get(id)!, 0);

  await repo.refresh();
  const packSizes = await sizes(store, PACKS_PREFIX, packIdOfPackKey);
  const indexSizes = await sizes(store, INDEX_PREFIX, packIdOfIndexKey);
  const indexes = repo.index.packIndexes();
  const repackBelow = options.repackBelow ?? DEFAULT_REPACK_BELOW;
  const unreferenced: string[] = [];
  const repack = new Map<string, PackIndex['blobs']>();
  for (const [pack, size] of packSizes) {
    const index = indexes.get(pack);
    const live = index?.blobs.filter((b) => chunks.has(b.id)) ?? [];
    if (live.length === 0) unreferenced.push(pack);
    else if (live.reduce((n, b) => n + b.length, 0) < repackBelow * size) repack.set(pack, live);
  }
  const condemned = new Set([...unreferenced, ...repack.keys()]);
  // The referenced chunks of repacked packs that no pack staying holds: those are copied.
  const kept = storedOutside(indexes, packSizes, condemned);
  const copies: Array<{ pack: string; blobs: PackIndex['blobs'] }> = [];
  const copying = new Set<string>();
  for (const [pack, live] of repack) {
    const blobs = live.filter((b) => !kept.has(b.id) && !copying.has(b.id));
    for (const b of blobs) copying.add(b.id);
    if (blobs.length > 0) copies.push({ pack, blobs });
  }
  const packBytes = (p: string) => (packSizes.get(p) ?? 0) + (indexSizes.get(p) ?? 0);
  const result: MarkResult = {
    pointsDeleted,
    pointsKept,
    candidates: [...condemned],
    candidateBytes: unreferenced.reduce((n, p) => n + packBytes(p), 0),
    manifestBytes,
    repacked: [...repack.keys()],
    repackedBytes: [...repack.keys()].reduce((n, p) => n + packBytes(p), 0),
    repackChunks: copying.size,
    repackWritten: copies.reduce((n, c) => n + c.blobs.reduce((m, b) => m + b.length, 0), 0),
    heldBy: [],
  };
  if (options.dryRun) return result;

  // The copies are stored before the mark: from the moment a writer reads the mark, each chunk
  // it may skip is in a pack the sweep keeps.
  if (copies.length > 0) result.repackWritten = (await repo.copyBlobs(copies)).bytes;

  const markId = `${new Date(clock.now()).toISOString().replace(/[:.]/g, '-')}-${randomBytes(4).toString('hex')}`;
  const mark: GcMark = {
    version: 1,
    markId,
    markedAt: new Date(clock.now()).toISOString(),
    candidates: result.candidates,
    ...(result.repacked.length > 0 ? { repacked: result.repacked } : {}),
    jobId: options.jobId,
  };
  await store.put(gcMarkKey(markId), repo.seal(mark, MARK_PURPOSE));
  // Only now: a lease written after this listing belongs to a task that will read the mark.
  result.heldBy = (await liveLeases(store, clock.now(), ttlMs)).map((l) => ({
    leaseId: l.leaseId,
    jobId: l.info?.jobId ?? 'unknown',
    kind: l.info?.kind ?? 'unknown',
    ...(l.info?.kind === 'BACKUP' && l.info.recoveryPointId
      ? { recoveryPointId: l.info.recoveryPointId }
      : {}),
  }));
  result.markId = markId;
  // The manifests go after the mark: if this stops in between, they keep their chunks.
  for (const id of pointsDeleted) await store.deletePrefix(pointPrefix(id));
  return result;
}

export interface SweepOptions {
  markId: string;
  heldBy: ReadonlyArray<{ leaseId: string; jobId: string; recoveryPointId?: string }>;
  ttlMs?: number;
  clock?: Clock;
}

export type SweepResult =
  | {
      done: false;
      /** Jobs whose leases the sweep waits for. */
      waitingFor: string[];
      /** When to try again. */
      waitSeconds: number;
    }
  | {
      done: true;
      packsDeleted: number;
      /** Of those, packs that were repacked (their referenced chunks live on in new packs). */
      packsRepacked: number;
      /** Chunks no manifest references that went with the deleted packs. */
      chunksDeleted: number;
      /** Bytes of the deleted packs and their indexes. */
      bytesFreed: number;
      /** Candidates a job committed a point over since the mark: kept. */
      packsKept: number;
      leasesCleared: number;
    };

export async function sweepGarbage(repo: Repository, options: SweepOptions): Promise<SweepResult> {
  const clock = options.clock ?? systemNow;
  const ttlMs = options.ttlMs ?? DEFAULT_LEASE_TTL_MS;
  const store = repo.store;
  const leases = await listLeases(store);
  const now = clock.now();
  const waiting = options.heldBy.filter((h) => {
    const lease = leases.get(h.leaseId);
    return lease !== undefined && isLive(lease, now, ttlMs);
  });
  if (waiting.length > 0) {
    return {
      done: false,
      waitingFor: [...new Set(waiting.map((w) => w.jobId))],
      waitSeconds: Math.max(1, Math.ceil(ttlMs / 3000)),
    };
  }
  let mark: GcMark | undefined;
  try {
    mark = repo.open<GcMark>(await getBuffer(store, gcMarkKey(options.markId)), MARK_PURPOSE);
  } catch (err) {
    if (!(err instanceof ObjectNotFound)) throw err;
  }
  let packsDeleted = 0;
  let packsRepacked = 0;
  let chunksDeleted = 0;
  let bytesFreed = 0;
  let packsKept = 0;
  if (mark) {
    const { chunks } = await referencedChunks(repo);
    await repo.refresh();
    const indexes = repo.index.packIndexes();
    const packSizes = await sizes(store, PACKS_PREFIX, packIdOfPackKey);
    const indexSizes = await sizes(store, INDEX_PREFIX, packIdOfIndexKey);
    const candidates = new Set(mark.candidates);
    const elsewhere = storedOutside(indexes, packSizes, candidates);
    // commit-point checks a point's pack list after its agent's lease ended: a pack a backup
    // held at the mark named there stays, even if its chunks are stored elsewhere too.
    const listed = await packsListedBy(
      store,
      options.heldBy.flatMap((h) => (h.recoveryPointId ? [h.recoveryPointId] : [])),
    );
    for (const pack of mark.candidates) {
      const index = indexes.get(pack);
      const live = index?.blobs.filter((b) => chunks.has(b.id)) ?? [];
      if (live.some((b) => !elsewhere.has(b.id)) || listed.has(pack)) {
        packsKept++;
        continue;
      }
      if (!packSizes.has(pack) && !indexSizes.has(pack)) continue; // swept already
      // The index first: no reader may find an entry whose pack is gone.
      await store.delete(indexKey(pack));
      await store.delete(packKey(pack));
      packsDeleted++;
      if (live.length > 0) packsRepacked++;
      chunksDeleted += (index?.blobs.length ?? 0) - live.length;
      bytesFreed += (packSizes.get(pack) ?? 0) + (indexSizes.get(pack) ?? 0);
    }
    await store.delete(gcMarkKey(options.markId));
    // Marks older than this one were left by prunes that stopped before their sweep (one prune
    // runs at a time): dropping them only lets writers rely on their packs again, which are
    // still stored, and the next mark finds those that are garbage.
    for await (const { key } of store.list(GC_PREFIX)) {
      if (key.slice(GC_PREFIX.length) < options.markId) await store.delete(key);
    }
    await repo.refresh();
  }
  // Leases that ended, or lapsed two ttls ago, protect nothing: their objects go; so do the
  // older renewals of live leases.
  let leasesCleared = 0;
  for (const lease of leases.values()) {
    if (lease.ended || now - lease.last >= 2 * ttlMs) {
      for (const key of lease.keys) await store.delete(key);
      leasesCleared++;
    } else {
      const newest = leaseKey(lease.leaseId, lease.last);
      for (const key of lease.keys) if (key !== newest) await store.delete(key);
    }
  }
  return {
    done: true,
    packsDeleted,
    packsRepacked,
    chunksDeleted,
    bytesFreed,
    packsKept,
    leasesCleared,
  };
}
