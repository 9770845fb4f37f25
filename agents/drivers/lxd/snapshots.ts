/**
 * Local snapshots of LXD instances: the fast tier beside offsite points, kept by LXD itself on the
 * instance's storage pool (`/1.0/instances/{name}/snapshots`).
 *
 * - Names: a pattern's `%d` becomes the next free number from 0, as LXD does for its own
 *   `snapshots.pattern` (LXD's API takes a name literally, so the agent resolves the pattern).
 * - Expiry: LXD's `expires_at` (the zero time `0001-01-01T00:00:00Z` means never). LXD prunes
 *   expired snapshots by itself about once a minute; every operation here first deletes the
 *   instance's expired snapshots, so none is ever listed, restored or re-expired after its time.
 * - Stateful: needs the instance running and, for a container, a CRIU that works on this host
 *   (LXD calls it to dump the processes); for a VM, `migration.stateful=true`. This is checked
 *   before anything is asked of LXD, so a refused stateful snapshot changes nothing.
 * - Restore: `PUT /1.0/instances/{name}` with `restore`; LXD stops a running instance, rolls its
 *   rootfs back and starts it again. Whatever happens, the instance ends in the power state it
 *   had before (checked and put right in `finally`).
 * - Schedule: the instance's `snapshots.schedule`, `.expiry`, `.pattern`, `.schedule.stopped`, so
 *   LXD itself takes them (its expiry syntax counts minutes `M` and hours `H`; Stowage's `m`, `h`).
 */
import { execFile } from 'node:child_process';
import { NameTaken, SnapshotNotFound, TargetNotFound, Unsupported } from '../../../kernel/errors';
import { LogEvent, type Logger } from '../../../kernel/logger';
import type {
  DriverContext,
  SnapshotCreateOptions,
  SnapshotInfo,
  SnapshotOps,
  SnapshotSchedule,
} from '../../core/driver';
import { isNotFound, translate } from './errors';
import { changeState, getInstance, instancePath, type Engine, type LxdInstance } from './instance';

/** The parts of `GET /1.0/instances/{name}/snapshots/{snap}` the driver reads. */
interface LxdSnapshot {
  name: string;
  created_at: string;
  expires_at: string;
  stateful: boolean;
}

/** LXD's "no expiry": Go's zero time. */
const NEVER = '0001-01-01T00:00:00Z';

/** Whether CRIU can checkpoint here: undefined when it can, else why not (in words). */
export type CriuCheck = () => Promise<string | undefined>;

const CRIU_TIMEOUT_MS = 20_000;

/** Runs `criu check` on this host (the agent runs beside lxd: its socket is local). */
export const hostCriuCheck: CriuCheck = () =>
  new Promise((resolve) => {
    execFile('criu', ['check'], { timeout: CRIU_TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (!err) return resolve(undefined);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return resolve('CRIU is not installed on the LXD host (Debian: apt-get install criu)');
      }
      const said = String(stderr).trim().split('\n').filter(Boolean).pop() ?? err.message;
      resolve(`CRIU cannot checkpoint processes on this host (criu check: ${said})`);
    });
  });

function snapshotPath(name: string, snapshot?: string): string {
  const base = `${instancePath(name)}/snapshots`;
  return snapshot === undefined ? base : `${base}/${encodeURIComponent(snapshot)}`;
}

/** LXD's RFC 3339 nanosecond times as ISO 8601 in milliseconds (sortable as text). */
function isoOf(time: string): string {
  return new Date(time).toISOString();
}

function infoOf(s: LxdSnapshot): SnapshotInfo {
  const expires = !s.expires_at || s.expires_at.startsWith('0001-') ? null : isoOf(s.expires_at);
  return { name: s.name, createdAt: isoOf(s.created_at), expiresAt: expires, stateful: s.stateful };
}

function expired(s: LxdSnapshot, now: number): boolean {
  const info = infoOf(s);
  return info.expiresAt !== null && Date.parse(info.expiresAt) <= now;
}

/** `7d` → `7d`, `12h` → `12H`, `30m` → `30M` (LXD counts months with `m`). */
export function toLxdExpiry(expiry: string): string {
  const m = /^(\d+)([mhdw])$/.exec(expiry);
  if (!m) throw new Unsupported(`LXD cannot take "${expiry}" as a schedule expiry`);
  const unit = { m: 'M', h: 'H', d: 'd', w: 'w' }[m[2] as 'm' | 'h' | 'd' | 'w'];
  return `${m[1]}${unit}`;
}

/** LXD's expiry back in Stowage's syntax where it has one (`12H` → `12h`); else as LXD wrote it. */
export function fromLxdExpiry(expiry: string): string {
  const m = /^(\d+)([MHdw])$/.exec(expiry.trim());
  if (!m) return expiry;
  const unit = { M: 'm', H: 'h', d: 'd', w: 'w' }[m[2] as 'M' | 'H' | 'd' | 'w'];
  return `${m[1]}${unit}`;
}

/** The schedule in force for an instance (its profiles' included), if any. */
export function scheduleOf(instance: LxdInstance): SnapshotSchedule | undefined {
  const config = instance.expanded_config ?? instance.config ?? {};
  const every = config['snapshots.schedule'];
  if (!every) return undefined;
  const expiry = config['snapshots.expiry'];
  const pattern = config['snapshots.pattern'];
  const stopped = config['snapshots.schedule.stopped'];
  return {
    every,
    ...(expiry ? { expiry: fromLxdExpiry(expiry) } : {}),
    ...(pattern ? { pattern } : {}),
    ...(stopped ? { stopped: stopped === 'true' } : {}),
  };
}

/** The next name of `pattern` among `taken`: `%d` is one more than the highest in use, from 0. */
export function nextSnapshotName(pattern: string, taken: readonly string[]): string {
  if (!pattern.includes('%d')) return pattern;
  const [before, after] = pattern.split('%d') as [string, string];
  let next = 0;
  for (const name of taken) {
    if (!name.startsWith(before) || !name.endsWith(after)) continue;
    const digits = name.slice(before.length, name.length - after.length);
    if (/^\d+$/.test(digits)) next = Math.max(next, Number(digits) + 1);
  }
  return `${before}${next}${after}`;
}

export interface LxdSnapshotOptions {
  log: Logger;
  criuCheck?: CriuCheck;
  /** The clock expiry is judged by (tests); default Date.now. */
  now?: () => number;
}

export function createSnapshotOps(engine: Engine, options: LxdSnapshotOptions): SnapshotOps {
  const now = options.now ?? Date.now;
  const criuCheck = options.criuCheck ?? hostCriuCheck;

  async function instanceOf(name: string): Promise<LxdInstance> {
    const instance = await getInstance(engine, name);
    if (!instance) throw new TargetNotFound(`lxd:${name} not found: no instance named ${name}`);
    return instance;
  }

  async function rawList(name: string): Promise<LxdSnapshot[]> {
    try {
      return await engine.client.get<LxdSnapshot[]>(`${snapshotPath(name)}?recursion=1`);
    } catch (err) {
      if (isNotFound(err)) {
        throw new TargetNotFound(`lxd:${name} not found: no instance named ${name}`, {
          cause: err,
        });
      }
      throw translate(err, `listing the snapshots of instance ${name}`, engine.socketPath);
    }
  }

  /**
   * Deletes the expired ones among `snapshots`; returns the rest. An expired snapshot is never
   * returned, even when its delete fails (the inventory pass and a task may race to delete it,
   * or LXD may be pruning it itself): that is logged, and the next pass tries again.
   */
  async function prune(
    name: string,
    snapshots: LxdSnapshot[],
    ctx?: DriverContext,
  ): Promise<{ kept: LxdSnapshot[]; pruned: string[] }> {
    const at = now();
    const kept: LxdSnapshot[] = [];
    const pruned: string[] = [];
    for (const s of snapshots) {
      if (!expired(s, at)) {
        kept.push(s);
        continue;
      }
      try {
        await engine.client.run('DELETE', snapshotPath(name, s.name));
      } catch (err) {
        if (!isNotFound(err)) {
          (ctx?.log ?? options.log).warn(LogEvent.driverStep, {
            step: 'delete expired snapshot',
            instance: name,
            snapshot: s.name,
            error: translate(err, `deleting expired snapshot ${name}/${s.name}`, engine.socketPath),
          });
          continue;
        }
      }
      pruned.push(s.name);
      (ctx?.log ?? options.log).info(LogEvent.driverStep, {
        step: 'delete expired snapshot',
        instance: name,
        snapshot: s.name,
        expiresAt: s.expires_at,
      });
    }
    return { kept, pruned };
  }

  async function current(name: string, ctx?: DriverContext): Promise<LxdSnapshot[]> {
    return (await prune(name, await rawList(name), ctx)).kept;
  }

  async function one(name: string, snapshot: string, ctx: DriverContext): Promise<LxdSnapshot> {
    const found = (await current(name, ctx)).find((s) => s.name === snapshot);
    if (!found) {
      throw new SnapshotNotFound(
        `lxd:${name}/${snapshot} does not exist (or expired and was deleted); \`stowage snapshot list lxd:${name}\` lists the snapshots`,
      );
    }
    return found;
  }

  async function read(name: string, snapshot: string): Promise<SnapshotInfo> {
    try {
      return infoOf(await engine.client.get<LxdSnapshot>(snapshotPath(name, snapshot)));
    } catch (err) {
      throw translate(err, `reading snapshot ${name}/${snapshot}`, engine.socketPath);
    }
  }

  /** Refuses (Unsupported) a stateful snapshot this instance cannot have; changes nothing. */
  async function checkStateful(instance: LxdInstance): Promise<void> {
    const what = `a stateful snapshot of lxd:${instance.name}`;
    if (instance.status !== 'Running') {
      throw new Unsupported(
        `${what} needs it running (it is ${instance.status}); take one without --stateful`,
      );
    }
    if (instance.type === 'virtual-machine') {
      if (instance.expanded_config?.['migration.stateful'] !== 'true') {
        throw new Unsupported(
          `${what} needs migration.stateful=true on the VM (set it, then restart it), or take one without --stateful`,
        );
      }
      return;
    }
    const why = await criuCheck();
    if (why) {
      throw new Unsupported(
        `${what} is not possible: ${why}; nothing was changed. Take one without --stateful`,
      );
    }
  }

  return {
    async list(name) {
      const kept = await current(name);
      return kept.map(infoOf).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    },

    async create(name, options: SnapshotCreateOptions, ctx) {
      ctx.phase('checking the instance');
      const instance = await instanceOf(name);
      if (options.stateful) await checkStateful(instance);
      const existing = await current(name, ctx);
      const snapshot = nextSnapshotName(
        options.pattern,
        existing.map((s) => s.name),
      );
      if (existing.some((s) => s.name === snapshot)) {
        throw new NameTaken(
          `lxd:${name}/${snapshot} exists; delete it first or use a pattern with %d (e.g. ${snapshot}-%d)`,
        );
      }
      ctx.phase(options.stateful ? 'taking a stateful snapshot' : 'taking a snapshot');
      const body: Record<string, unknown> = { name: snapshot, stateful: options.stateful };
      if (options.expiresAt !== undefined) {
        body.expires_at = options.expiresAt === null ? NEVER : options.expiresAt.toISOString();
      }
      try {
        await engine.client.run('POST', snapshotPath(name), body);
      } catch (err) {
        throw translate(err, `creating snapshot ${name}/${snapshot}`, engine.socketPath);
      }
      return read(name, snapshot);
    },

    async setExpiry(name, snapshot, expiresAt, ctx) {
      ctx.phase('changing the expiry');
      await one(name, snapshot, ctx);
      try {
        await engine.client.run('PATCH', snapshotPath(name, snapshot), {
          expires_at: expiresAt === null ? NEVER : expiresAt.toISOString(),
        });
      } catch (err) {
        throw translate(err, `changing the expiry of ${name}/${snapshot}`, engine.socketPath);
      }
      // An expiry already past takes effect at once, as on the next pass it would.
      await current(name, ctx);
      return read(name, snapshot).catch((err: unknown) => {
        if (err instanceof TargetNotFound) {
          throw new SnapshotNotFound(
            `lxd:${name}/${snapshot} expired at once (the new expiry is past) and was deleted`,
          );
        }
        throw err;
      });
    },

    async delete(name, snapshot, ctx) {
      ctx.phase('deleting the snapshot');
      await one(name, snapshot, ctx);
      try {
        await engine.client.run('DELETE', snapshotPath(name, snapshot));
      } catch (err) {
        if (isNotFound(err)) return;
        throw translate(err, `deleting snapshot ${name}/${snapshot}`, engine.socketPath);
      }
    },

    async restore(name, snapshot, ctx) {
      ctx.phase('checking the snapshot');
      const instance = await instanceOf(name);
      const snap = await one(name, snapshot, ctx);
      const wasRunning = instance.status === 'Running' || instance.status === 'Frozen';
      ctx.phase(`restoring ${name} to ${snapshot}`);
      try {
        await engine.client.run('PUT', instancePath(name), {
          restore: snapshot,
          stateful: snap.stateful,
        });
      } catch (err) {
        throw translate(err, `restoring ${name} to snapshot ${snapshot}`, engine.socketPath);
      } finally {
        await settlePower(name, wasRunning, ctx);
      }
      return infoOf(snap);
    },

    async schedule(name, schedule, ctx) {
      ctx.phase('setting the schedule');
      await instanceOf(name);
      const config: Record<string, string> = {
        'snapshots.schedule': schedule?.every ?? '',
        'snapshots.expiry':
          schedule?.expiry && schedule.expiry !== 'never' ? toLxdExpiry(schedule.expiry) : '',
        'snapshots.pattern': schedule?.pattern ?? '',
        'snapshots.schedule.stopped':
          schedule?.stopped === undefined ? '' : String(schedule.stopped),
      };
      try {
        await engine.client.run('PATCH', instancePath(name), { config });
      } catch (err) {
        throw translate(err, `setting the snapshot schedule of ${name}`, engine.socketPath);
      }
      return scheduleOf(await instanceOf(name)) ?? null;
    },

    async pruneExpired(name, ctx) {
      return (await prune(name, await rawList(name), ctx)).pruned;
    },
  };

  /** Puts the instance back in the power state it had: running if it ran, else stopped. */
  async function settlePower(name: string, wasRunning: boolean, ctx: DriverContext) {
    const now = await getInstance(engine, name).catch(() => undefined);
    if (!now) return;
    try {
      if (wasRunning && now.status === 'Frozen') await changeState(engine, name, 'unfreeze');
      else if (wasRunning && now.status !== 'Running') await changeState(engine, name, 'start');
      else if (!wasRunning && now.status === 'Running') await changeState(engine, name, 'stop');
    } catch (err) {
      ctx.log.warn(LogEvent.driverStep, {
        step: 'restore power state',
        instance: name,
        error: err,
      });
      throw err;
    }
  }
}
