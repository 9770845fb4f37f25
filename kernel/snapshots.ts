/**
 * Local snapshots, the fast tier beside offsite recovery points: how they are named, how long they
 * live, and how they join the points listing. Pure: the API validates with it, the agent turns
 * expiries into times with it (by its own clock, the engine host's, which also prunes).
 *
 * A snapshot's id is its target key, a slash and its name: `lxd:web/snap0` (LXD writes
 * `web/snap0`). The name never holds a `/`, so the last `/` splits the id even when the target's
 * name has slashes of its own (`lxd-volume:default/data/snap0`); `@` keeps meaning "agent", so
 * `lxd:web/snap0@site1` names the snapshot as seen by agent site1.
 */
import { ValidationError } from './errors';
import type { SnapshotInfo } from '../statemachines/contracts';
import type { AgentRecord, InventoryTarget } from './model';
import { parseTarget, type TargetRef } from './targets';

export interface SnapshotRef {
  target: TargetRef;
  name: string;
}

/** Snapshot names Stowage makes and accepts: what LXD's own `snap%d` names look like. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function snapshotId(target: string, name: string): string {
  return `${target}/${name}`;
}

/** Reads `PLATFORM:NAME/SNAPSHOT[@AGENT]`. */
export function parseSnapshotId(text: string): SnapshotRef {
  const ref = parseTarget(text);
  const slash = ref.name.lastIndexOf('/');
  const name = slash >= 0 ? ref.name.slice(slash + 1) : '';
  if (slash <= 0 || !NAME_RE.test(name)) {
    throw new ValidationError(
      `"${text}" is not a snapshot id; write TARGET/SNAPSHOT, e.g. lxd:web/snap0 (\`stowage snapshot list\` shows them)`,
    );
  }
  const target: TargetRef = { ...ref, name: ref.name.slice(0, slash) };
  return { target, name };
}

export type Expiry =
  | { kind: 'never' }
  | { kind: 'after'; ms: number; amount: number; unit: DurationUnit }
  | { kind: 'at'; at: Date };

export type DurationUnit = 's' | 'm' | 'h' | 'd' | 'w';

const UNIT_MS: Record<DurationUnit, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};
const DURATION_RE = /^(\d{1,6})([smhdw])$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;
const EXPIRY_HELP =
  'give `never`, a duration (30s, 15m, 12h, 7d, 2w: from when the snapshot is taken or changed) or an ISO 8601 time (2026-12-01T00:00:00Z)';

/** Parses an expiry as the CLI and the API take it. */
export function parseExpiry(text: string): Expiry {
  const raw = text.trim();
  if (raw === 'never') return { kind: 'never' };
  const d = DURATION_RE.exec(raw);
  if (d) {
    const amount = Number(d[1]);
    const unit = d[2] as DurationUnit;
    if (amount === 0) throw new ValidationError(`expiry "${text}" is zero; ${EXPIRY_HELP}`);
    return { kind: 'after', amount, unit, ms: amount * UNIT_MS[unit] };
  }
  if (ISO_RE.test(raw) && !Number.isNaN(Date.parse(raw))) {
    return { kind: 'at', at: new Date(raw) };
  }
  throw new ValidationError(`expiry "${text}" is not understood; ${EXPIRY_HELP}`);
}

/** When a snapshot given `expiry` at `now` expires; null: never. */
export function expiresAt(expiry: string, now: Date): Date | null {
  const e = parseExpiry(expiry);
  if (e.kind === 'never') return null;
  if (e.kind === 'at') return e.at;
  return new Date(now.getTime() + e.ms);
}

export function isExpired(snapshot: Pick<SnapshotInfo, 'expiresAt'>, now: Date): boolean {
  return snapshot.expiresAt !== null && Date.parse(snapshot.expiresAt) <= now.getTime();
}

/**
 * A name pattern: letters, digits, `.`, `_`, `-`, with at most one `%d` (the next free number,
 * counting from 0, as LXD's `snapshots.pattern` does). Returns it as given.
 */
export function checkPattern(pattern: string): string {
  const count = pattern.split('%d').length - 1;
  const sample = pattern.replace('%d', '0');
  if (count > 1 || !NAME_RE.test(sample) || sample.length > 56) {
    throw new ValidationError(
      `snapshot name pattern "${pattern}" is not valid; use letters, digits, . _ - and at most one %d (e.g. snap%d, before-upgrade), up to 56 characters`,
    );
  }
  return pattern;
}

const SCHEDULE_ALIASES = [
  '@hourly',
  '@daily',
  '@midnight',
  '@weekly',
  '@monthly',
  '@annually',
  '@yearly',
];
const CRON_FIELD = /^[0-9A-Za-z*,/-]+$/;

/** `none` (remove), one of LXD's `@` aliases, or a five-field cron expression. */
export function checkSchedule(every: string): string {
  const raw = every.trim();
  if (raw === 'none' || SCHEDULE_ALIASES.includes(raw)) return raw;
  const fields = raw.split(/\s+/);
  if (fields.length === 5 && fields.every((f) => CRON_FIELD.test(f))) return fields.join(' ');
  throw new ValidationError(
    `schedule "${every}" is not understood; give ${SCHEDULE_ALIASES.join(', ')}, a cron expression of five fields ('0 3 * * *': 03:00 every day), or none to remove it`,
  );
}

/** A schedule's expiry: a duration of whole minutes or more (the engine counts no seconds). */
export function checkScheduleExpiry(expiry: string): string {
  const e = parseExpiry(expiry);
  if (e.kind === 'never') return 'never';
  if (e.kind !== 'after' || e.unit === 's') {
    throw new ValidationError(
      `a schedule's expiry is a duration in minutes or more (15m, 12h, 7d, 2w) or never, not "${expiry}"`,
    );
  }
  return `${e.amount}${e.unit}`;
}

/** One local snapshot in the points listing, beside the offsite points. */
export interface SnapshotListing {
  tier: 'snapshot';
  snapshotId: string;
  target: string;
  agent: string;
  name: string;
  createdAt: string;
  expiresAt: string | null;
  stateful: boolean;
  status: 'AVAILABLE';
}

/**
 * The snapshots the agents last reported, newest first, without those past their expiry (the
 * agent deletes them on its next pass; they are already gone for every purpose).
 */
export function listedSnapshots(
  agents: readonly AgentRecord[],
  now: Date,
  target?: string,
): SnapshotListing[] {
  const out: SnapshotListing[] = [];
  for (const agent of agents) {
    for (const t of agent.targets) {
      if (target !== undefined && t.target !== target) continue;
      for (const s of t.snapshots ?? []) {
        if (isExpired(s, now)) continue;
        out.push({
          tier: 'snapshot',
          snapshotId: snapshotId(t.target, s.name),
          target: t.target,
          agent: agent.agent,
          name: s.name,
          createdAt: s.createdAt,
          expiresAt: s.expiresAt,
          stateful: s.stateful,
          status: 'AVAILABLE',
        });
      }
    }
  }
  return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
}

/** The inventory entry of a target as one agent reported it, or undefined. */
export function inventoryEntry(agent: AgentRecord, target: string): InventoryTarget | undefined {
  return agent.targets.find((t) => t.target === target);
}
