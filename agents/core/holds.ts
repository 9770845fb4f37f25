/**
 * Crash-safe holds: the journal of what an agent has taken hold of on its host's engines.
 *
 * A hold is anything a job does to a workload or an engine that must be undone whatever happens:
 * a container paused or stopped for a consistent backup, an LXD instance frozen or stopped, a
 * committed image, a helper container, an LXD backup file on the server, a snapshot, a container
 * set aside by an in-place restore, a temporary volume. Drivers already pair every acquire with
 * its release in `finally`; that protects against errors, not against the agent being killed
 * (the OOM killer, a reboot, `kill -9`). So every hold is also written here:
 *
 * - BEFORE it is taken, `take` writes one record (`<dir>/<id>.json`: written to a temporary file,
 *   fsync'd, renamed, and the directory fsync'd) saying what the hold is and how to release it.
 *   A hold that fails to be taken after its record was written is harmless: releases are
 *   idempotent and check the engine first (start only what is stopped, remove only what exists).
 * - AFTER its release succeeded, `clear` removes the record (unlink, directory fsync'd).
 * - A release that fails keeps the record; so does a job that dies. An agent that starts reads
 *   the records left (`sweep`) before it takes any task, newest first (the reverse of the order
 *   they were taken, as `finally` blocks unwind), and hands each to the driver that wrote it
 *   (`Driver.releaseHold`), which undoes it against the engine as it finds it. A record whose
 *   release fails again stays for the next sweep (after every task, and periodically).
 *
 * So the retry of a killed job never sees a workload that Stowage stopped as if its owner had:
 * by the time the agent takes the retry, the container runs again.
 *
 * Records of holds a task of this process still has in hand are never swept: the journal knows
 * them (`live`) until they are cleared or given up (a failed release hands the record to the
 * sweep). One journal directory serves one agent process: `open` refuses a directory another
 * live process owns.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../kernel/logger';

export interface HoldRecord {
  /** Sortable by the time it was taken (`<ms>-<seq>-<random>`), unique. */
  id: string;
  /** The driver family that took it and can release it (`docker`, `lxd`). */
  platform: string;
  /** The driver's own name for the hold (`docker.quiesce`, `lxd.backup`...). */
  kind: string;
  takenAt: string;
  /** The job it was taken for, for the log. */
  jobId?: string;
  /** Everything the release needs, in the driver's terms (engine socket, names, ids). */
  data: Record<string, unknown>;
}

/** A hold whose record is in the journal. */
export interface Hold {
  readonly record: HoldRecord;
  /** Rewrites the record durably (a hold that changes, e.g. an in-place restore past its point of no return). */
  update(data: Record<string, unknown>): Promise<void>;
  /** The hold was released: removes its record. Idempotent. */
  clear(): Promise<void>;
  /**
   * The release failed (or the acquire failed midway): the record stays and is handed to the
   * next sweep, which releases it against the engine as it then is.
   */
  abandon(): void;
}

/** What drivers see (DriverContext.holds): records holds before they take them. */
export interface HoldTaker {
  take(platform: string, kind: string, data: Record<string, unknown>): Promise<Hold>;
}

/** Releases one record of a killed (or failed) job; throws to keep it for a later sweep. */
export type HoldReleaser = (record: HoldRecord, log: Logger) => Promise<void>;

export type Release = () => Promise<void>;

/**
 * The acquire/release pattern, journaled: writes the record, runs `acquire` (which returns its
 * release), and returns a release that runs it and then clears the record. A failing acquire or
 * release leaves the record to the sweep and rethrows. Without a journal (`holds` undefined:
 * a driver used outside an agent), it is `acquire` alone.
 */
export async function journaled(
  holds: HoldTaker | undefined,
  platform: string,
  kind: string,
  data: Record<string, unknown>,
  acquire: () => Promise<Release>,
): Promise<Release> {
  if (!holds) return acquire();
  const hold = await holds.take(platform, kind, data);
  let release: Release;
  try {
    release = await acquire();
  } catch (err) {
    hold.abandon();
    throw err;
  }
  return async () => {
    try {
      await release();
    } catch (err) {
      hold.abandon();
      throw err;
    }
    await hold.clear();
  };
}

/** Takes a hold when there is a journal; undefined otherwise (for `?.clear()`). */
export function takeHold(
  holds: HoldTaker | undefined,
  platform: string,
  kind: string,
  data: Record<string, unknown>,
): Promise<Hold | undefined> {
  return holds ? holds.take(platform, kind, data) : Promise.resolve(undefined);
}

const RECORD = /^[0-9]{13}-[0-9]{6}-[0-9a-f]{8}\.json$/;
const OWNER = 'owner.pid';
/** Directories owned by journals of this process (an agent's tests may run several). */
const ownedHere = new Set<string>();

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeDurably(dir: string, file: string, text: string): void {
  const temp = join(dir, `.${file}.tmp`);
  const fd = openSync(temp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, join(dir, file));
  fsyncDir(dir);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The journal in a directory on the agent's host (`<data dir>/holds/<site>`). Writes are
 * synchronous and fsync'd: a record exists on disk before `take` resolves, whatever happens to
 * the process next. Records are small JSON files, one per hold.
 */
export class DirHoldJournal {
  private readonly live = new Set<string>();
  private seq = 0;

  private constructor(readonly dir: string) {}

  /** Opens (creating) the journal; refuses a directory another live agent process owns. */
  static open(dir: string): DirHoldJournal {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const ownerFile = join(dir, OWNER);
    if (ownedHere.has(dir)) {
      throw new Error(
        `the hold journal ${dir} is already open in this process: give each agent its own data directory`,
      );
    }
    if (existsSync(ownerFile)) {
      const pid = Number(readFileSync(ownerFile, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new Error(
          `another agent (pid ${pid}) uses the hold journal ${dir}: give each agent its own data directory (--data-dir)`,
        );
      }
    }
    writeFileSync(ownerFile, `${process.pid}\n`, { mode: 0o600 });
    ownedHere.add(dir);
    // A temporary file is a record whose take() never returned: its hold was never taken.
    for (const name of readdirSync(dir)) {
      if (name.startsWith('.') && name.endsWith('.tmp')) unlinkSync(join(dir, name));
    }
    return new DirHoldJournal(dir);
  }

  /** Lets another journal open the directory (the agent stopped). Records stay. */
  close(): void {
    ownedHere.delete(this.dir);
    try {
      unlinkSync(join(this.dir, OWNER));
    } catch {
      // already gone
    }
  }

  /** The taker a task's drivers use: every record carries the task's job. */
  taker(jobId?: string): HoldTaker {
    return { take: (platform, kind, data) => this.take(platform, kind, data, jobId) };
  }

  take(
    platform: string,
    kind: string,
    data: Record<string, unknown>,
    jobId?: string,
  ): Promise<Hold> {
    this.seq = (this.seq + 1) % 1_000_000;
    const id = `${Date.now()}-${String(this.seq).padStart(6, '0')}-${randomBytes(4).toString('hex')}`;
    let record: HoldRecord = {
      id,
      platform,
      kind,
      takenAt: new Date().toISOString(),
      ...(jobId !== undefined ? { jobId } : {}),
      data,
    };
    const file = `${id}.json`;
    this.live.add(id);
    writeDurably(this.dir, file, JSON.stringify(record));
    let cleared = false;
    const hold: Hold = {
      get record() {
        return record;
      },
      update: (next) => {
        record = { ...record, data: next };
        if (!cleared) writeDurably(this.dir, file, JSON.stringify(record));
        return Promise.resolve();
      },
      clear: () => {
        if (cleared) return Promise.resolve();
        cleared = true;
        this.live.delete(id);
        this.remove(file);
        return Promise.resolve();
      },
      abandon: () => {
        this.live.delete(id);
      },
    };
    return Promise.resolve(hold);
  }

  /** Records no task of this process has in hand, newest first. */
  pending(): HoldRecord[] {
    const records: HoldRecord[] = [];
    for (const name of readdirSync(this.dir).sort().reverse()) {
      if (!RECORD.test(name)) continue;
      const id = name.slice(0, -'.json'.length);
      if (this.live.has(id)) continue;
      try {
        const parsed = JSON.parse(readFileSync(join(this.dir, name), 'utf8')) as HoldRecord;
        if (
          typeof parsed.platform !== 'string' ||
          typeof parsed.kind !== 'string' ||
          typeof parsed.data !== 'object' ||
          parsed.data === null
        ) {
          throw new Error('not a hold record');
        }
        records.push({ ...parsed, id });
      } catch {
        // Not ours to interpret; set aside so it is looked at once, not at every sweep.
        renameSync(join(this.dir, name), join(this.dir, `${name}.bad`));
      }
    }
    return records;
  }

  /**
   * Releases every pending record through its driver family's releaser, newest first; a record
   * whose family is missing or whose release fails stays. Returns what happened.
   */
  async sweep(
    releasers: ReadonlyMap<string, HoldReleaser>,
    log: Logger,
  ): Promise<{ released: number; kept: number }> {
    let released = 0;
    let kept = 0;
    // A job whose newer hold could not be released keeps its older ones: they may be what the
    // newer one needs (an in-place swap needs its temporary volumes).
    const stuck = new Set<string>();
    for (const record of this.pending()) {
      const release = releasers.get(record.platform);
      const facts = { hold: record.kind, id: record.id, jobId: record.jobId, data: record.data };
      if (record.jobId !== undefined && stuck.has(record.jobId)) {
        kept += 1;
        continue;
      }
      if (!release) {
        if (record.jobId !== undefined) stuck.add(record.jobId);
        kept += 1;
        log.warn('agent.hold.kept', {
          ...facts,
          reason: `this agent has no ${record.platform} driver (is its engine down?)`,
        });
        continue;
      }
      try {
        await release(record, log);
        this.remove(`${record.id}.json`);
        released += 1;
        log.info('agent.hold.released', facts);
      } catch (err) {
        kept += 1;
        if (record.jobId !== undefined) stuck.add(record.jobId);
        log.warn('agent.hold.kept', { ...facts, error: err, next: 'released again later' });
      }
    }
    return { released, kept };
  }

  private remove(file: string): void {
    try {
      unlinkSync(join(this.dir, file));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    fsyncDir(this.dir);
  }
}
