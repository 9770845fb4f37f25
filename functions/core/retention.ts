/**
 * Which recovery points a policy keeps, and why: restic's `forget` rules plus three of our own.
 * Pure: the points, the policies and the clock come in, a decision per point goes out. Prune
 * deletes exactly the points decided `keep: false`, and `stowage points` prints the reasons.
 *
 * restic's rules, with restic's meaning (restic/internal/restic/snapshot_policy.go), applied to
 * the points of one target at a time (restic groups by host and paths; a target is our group):
 *
 * - `keepLast N`: the N newest points.
 * - `keepHourly|Daily|Weekly|Monthly|Yearly N`: for the last N hours (days, ISO weeks, months,
 *   years) that have a point, the newest point of each. Only periods with a point count, so
 *   `keepDaily 7` over a target backed up every other day reaches back 14 days.
 * - `keepWithin D` (`1y2m3d4h`): every point made within D before the target's NEWEST point (not
 *   before now, as restic: a target whose backups stopped keeps its last points).
 * - Each rule runs over all the points on its own; a point is kept if any rule keeps it, and it
 *   carries every rule that does. A policy with no rule keeps everything (restic refuses to forget
 *   anything without a policy).
 *
 * Where we differ from restic: periods are calendar periods in the POLICY'S time zone (restic
 * uses each snapshot's own local time); `-1` (unlimited) is not accepted, use a large number.
 *
 * Beyond restic:
 * - A target's points are covered by every policy that protects it (a target protected by two
 *   policies keeps the union). A target no policy protects keeps every point until
 *   `stowage points delete`.
 * - The newest point of a target that passed verify is never expired.
 * - When a target's newest point looks anomalous (no streams, or less than half the size of the
 *   point before it) nothing of that target expires: a backup that silently captured nothing
 *   must not be what pushes the good points out. The hold is given as the reason.
 * - A point labelled `pre-update` (`stowage protect-update`) is kept until 7 days after the next
 *   point of its target; until there is one, it is kept.
 */

export interface RetentionRules {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  /** restic's duration: `1y2m3d4h` (years, months, days, hours; any may be left out). */
  keepWithin?: string;
}

/** What retention needs to know of a point (a RecoveryPoint has all of it). */
export interface RetainedPoint {
  recoveryPointId: string;
  target: string;
  createdAt: string;
  /** Bytes read from the source: the point's size. */
  bytesRead: number;
  streams: readonly unknown[];
  label?: string;
  /** When a verify of this point succeeded. */
  verifiedAt?: string;
  /** The policy whose run made it. */
  policy?: string;
}

export interface RetentionPolicy {
  name: string;
  /** The concrete targets it protects (`docker:web`); selectors are matched through `policy`. */
  targets: readonly string[];
  timezone: string;
  rules: RetentionRules;
}

export interface RetentionDecision {
  recoveryPointId: string;
  target: string;
  keep: boolean;
  /** Why it is kept, or why it expires; never empty. */
  reasons: string[];
  /** When a time-limited reason (pre-update) runs out, if that is known. */
  keptUntil?: string;
}

export const PRE_UPDATE_LABEL = 'pre-update';
export const PRE_UPDATE_GRACE_MS = 7 * 86_400_000;
/** A newest point under this fraction of its predecessor's size holds expiry. */
const ANOMALY_SIZE_RATIO = 0.5;

const COUNT_RULES = [
  ['keepLast', 'last'],
  ['keepHourly', 'hourly'],
  ['keepDaily', 'daily'],
  ['keepWeekly', 'weekly'],
  ['keepMonthly', 'monthly'],
  ['keepYearly', 'yearly'],
] as const;

/** Throws an Error naming the rule when the rules are not valid. */
export function checkRetentionRules(rules: RetentionRules): RetentionRules {
  for (const [key, word] of COUNT_RULES) {
    const n = rules[key];
    if (n === undefined) continue;
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new Error(`--keep-${word} must be a whole number of 1 or more, not ${String(n)}`);
    }
  }
  if (rules.keepWithin !== undefined) parseWithin(rules.keepWithin);
  return rules;
}

export function hasRules(rules: RetentionRules): boolean {
  return COUNT_RULES.some(([key]) => rules[key] !== undefined) || rules.keepWithin !== undefined;
}

interface Within {
  years: number;
  months: number;
  days: number;
  hours: number;
}

/** restic's `1y2m3d4h`; throws with how to write it. */
export function parseWithin(text: string): Within {
  const m = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$/.exec(text);
  if (!m || text === '') {
    throw new Error(
      `--keep-within ${JSON.stringify(text)} is not a duration: write years, months, days and hours as in restic, e.g. 7d, 1m15d or 1y2m3d4h`,
    );
  }
  const [years, months, days, hours] = m.slice(1).map((v) => Number(v ?? 0)) as [
    number,
    number,
    number,
    number,
  ];
  return { years, months, days, hours };
}

/** `at` minus the duration, by the calendar (as Go's AddDate), in UTC. */
function minusWithin(at: Date, w: Within): number {
  const d = new Date(at.getTime());
  d.setUTCFullYear(
    d.getUTCFullYear() - w.years,
    d.getUTCMonth() - w.months,
    d.getUTCDate() - w.days,
  );
  return d.getTime() - w.hours * 3_600_000;
}

interface Calendar {
  year: number;
  month: number;
  day: number;
  hour: number;
}

function calendarOf(at: Date, format: Intl.DateTimeFormat): Calendar {
  const parts: Record<string, number> = {};
  for (const p of format.formatToParts(at)) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  return {
    year: parts.year!,
    month: parts.month!,
    day: parts.day!,
    hour: parts.hour! % 24, // some runtimes write midnight as 24
  };
}

/** ISO 8601 week as year * 100 + week, as restic's weekly bucket. */
function isoWeek({ year, month, day }: Calendar): number {
  const date = new Date(Date.UTC(year, month - 1, day));
  const weekday = date.getUTCDay() || 7;
  date.setUTCDate(date.getUTCDate() + 4 - weekday); // the Thursday of this week
  const weekYear = date.getUTCFullYear();
  const week = Math.ceil(((date.getTime() - Date.UTC(weekYear, 0, 1)) / 86_400_000 + 1) / 7);
  return weekYear * 100 + week;
}

function bucketOf(rule: (typeof COUNT_RULES)[number][1], c: Calendar, index: number): number {
  switch (rule) {
    case 'last':
      return index;
    case 'hourly':
      return ((c.year * 100 + c.month) * 100 + c.day) * 100 + c.hour;
    case 'daily':
      return (c.year * 100 + c.month) * 100 + c.day;
    case 'weekly':
      return isoWeek(c);
    case 'monthly':
      return c.year * 100 + c.month;
    case 'yearly':
      return c.year;
  }
}

function periodName(rule: (typeof COUNT_RULES)[number][1], c: Calendar): string {
  const p2 = (n: number) => String(n).padStart(2, '0');
  switch (rule) {
    case 'last':
      return '';
    case 'hourly':
      return ` ${c.year}-${p2(c.month)}-${p2(c.day)} ${p2(c.hour)}h`;
    case 'daily':
      return ` ${c.year}-${p2(c.month)}-${p2(c.day)}`;
    case 'weekly': {
      const w = isoWeek(c);
      return ` ${Math.floor(w / 100)}-W${p2(w % 100)}`;
    }
    case 'monthly':
      return ` ${c.year}-${p2(c.month)}`;
    case 'yearly':
      return ` ${c.year}`;
  }
}

/** Newest first; ties broken by id so the order is the same everywhere. */
function newestFirst(a: RetainedPoint, b: RetainedPoint): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.recoveryPointId < b.recoveryPointId ? 1 : -1;
}

/** Why the newest point of a target (points newest first) holds expiry, if it does. */
export function anomalyOf(points: readonly RetainedPoint[]): string | undefined {
  const [newest, previous] = points;
  if (!newest) return undefined;
  if (newest.streams.length === 0) {
    return `expiry held: the newest point ${newest.recoveryPointId} has no streams`;
  }
  if (
    previous &&
    previous.bytesRead > 0 &&
    newest.bytesRead < previous.bytesRead * ANOMALY_SIZE_RATIO
  ) {
    const pct = Math.round((1 - newest.bytesRead / previous.bytesRead) * 100);
    return `expiry held: the newest point ${newest.recoveryPointId} is ${pct} % smaller than ${previous.recoveryPointId} before it`;
  }
  return undefined;
}

/** The reasons each policy's rules keep points of one target (points newest first). */
function applyRules(
  points: readonly RetainedPoint[],
  policy: RetentionPolicy,
): Map<string, string[]> {
  const kept = new Map<string, string[]>();
  const add = (id: string, why: string) => {
    const list = kept.get(id);
    if (list) list.push(why);
    else kept.set(id, [why]);
  };
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: policy.timezone,
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    hourCycle: 'h23',
  });
  const calendars = points.map((p) => calendarOf(new Date(p.createdAt), format));
  for (const [key, rule] of COUNT_RULES) {
    const count = policy.rules[key];
    if (count === undefined) continue;
    let left = count;
    let last: number | undefined;
    points.forEach((p, i) => {
      if (left === 0) return;
      const bucket = bucketOf(rule, calendars[i]!, i);
      if (bucket === last) return;
      last = bucket;
      left--;
      add(
        p.recoveryPointId,
        `policy ${policy.name}: ${rule} ${count - left}/${count}${periodName(rule, calendars[i]!)}`,
      );
    });
  }
  if (policy.rules.keepWithin !== undefined && points.length > 0) {
    const since = minusWithin(new Date(points[0]!.createdAt), parseWithin(policy.rules.keepWithin));
    for (const p of points) {
      if (Date.parse(p.createdAt) >= since) {
        add(
          p.recoveryPointId,
          `policy ${policy.name}: within ${policy.rules.keepWithin} of the newest point`,
        );
      }
    }
  }
  return kept;
}

/**
 * A decision for every point given. `policies` are all the policies; each covers the points of
 * its targets and the points its runs made.
 */
export function applyRetention(
  points: readonly RetainedPoint[],
  policies: readonly RetentionPolicy[],
  now: Date,
): RetentionDecision[] {
  const byTarget = new Map<string, RetainedPoint[]>();
  for (const p of points) {
    const list = byTarget.get(p.target);
    if (list) list.push(p);
    else byTarget.set(p.target, [p]);
  }
  const decisions = new Map<string, RetentionDecision>();
  for (const [target, list] of byTarget) {
    list.sort(newestFirst);
    const covering = policies.filter(
      (policy) => policy.targets.includes(target) || list.some((p) => p.policy === policy.name),
    );
    const reasons = new Map<string, string[]>(list.map((p) => [p.recoveryPointId, []]));
    const until = new Map<string, string>();
    const why = (id: string, text: string) => reasons.get(id)!.push(text);

    const ruled = covering.filter((policy) => hasRules(policy.rules));
    if (covering.length === 0 || ruled.length < covering.length) {
      const text =
        covering.length === 0
          ? `no policy protects ${target}: kept until deleted`
          : `policy ${covering.find((policy) => !hasRules(policy.rules))!.name} has no retention rule: kept until deleted`;
      for (const p of list) why(p.recoveryPointId, text);
    }
    for (const policy of ruled) {
      for (const [id, texts] of applyRules(list, policy)) reasons.get(id)!.push(...texts);
    }
    const verified = list.find((p) => p.verifiedAt !== undefined);
    if (verified) why(verified.recoveryPointId, 'the newest point that passed verify');
    list.forEach((p, i) => {
      if (p.label !== PRE_UPDATE_LABEL) return;
      const next = list[i - 1]; // the next point of the target, if any
      if (!next) {
        why(p.recoveryPointId, 'pre-update: kept until 7 days after the next backup of the target');
        return;
      }
      const end = new Date(Date.parse(next.createdAt) + PRE_UPDATE_GRACE_MS);
      if (end.getTime() > now.getTime()) {
        until.set(p.recoveryPointId, end.toISOString());
        why(
          p.recoveryPointId,
          `pre-update: kept until ${end.toISOString()} (7 days after ${next.recoveryPointId})`,
        );
      }
    });
    const hold = anomalyOf(list);
    for (const p of list) {
      const texts = reasons.get(p.recoveryPointId)!;
      let keep = texts.length > 0;
      if (!keep && hold) {
        texts.push(hold);
        keep = true;
      }
      if (!keep) texts.push('expired: no retention rule keeps it; the next prune deletes it');
      decisions.set(p.recoveryPointId, {
        recoveryPointId: p.recoveryPointId,
        target,
        keep,
        reasons: texts,
        ...(until.has(p.recoveryPointId) ? { keptUntil: until.get(p.recoveryPointId)! } : {}),
      });
    }
  }
  return points.map((p) => decisions.get(p.recoveryPointId)!);
}
