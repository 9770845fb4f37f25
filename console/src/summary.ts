/**
 * What the dashboard derives from the API's lists: the last backup result of every protected
 * target, and the series the plots draw. Pure, so unit tests cover them.
 */
import type { Job, Policy, RecoveryPoint } from '../../kernel/model';

/** An item's status in the job's words; a waiting or running item has its job's status. */
const ITEM_STATUS: Partial<Record<string, string>> = { COMPLETED: 'SUCCEEDED', FAILED: 'FAILED' };

export interface TargetResult {
  target: string;
  /** The newest backup job that covered the target (itself, or as an item of a selector). */
  jobId?: string;
  status?: string;
  at?: string;
  error?: string;
  /** The newest completed point and its size. */
  point?: RecoveryPoint;
  policies: string[];
}

/**
 * Every target that has a point, a backup job or a policy naming it, with its last backup's
 * result; newest activity first.
 */
export function lastResults(
  jobs: readonly Job[],
  points: readonly RecoveryPoint[],
  policies: readonly Policy[],
): TargetResult[] {
  const byTarget = new Map<string, TargetResult>();
  const entry = (target: string) => {
    let r = byTarget.get(target);
    if (!r) byTarget.set(target, (r = { target, policies: [] }));
    return r;
  };
  for (const p of policies)
    for (const t of p.targets) if (!t.includes('=')) entry(t).policies.push(p.name);
  // Jobs come newest first; the first one seen for a target is its last.
  for (const job of jobs) {
    if (job.kind !== 'BACKUP') continue;
    const items = job.items ?? [];
    const covered = items.length
      ? items.map((i) => ({
          target: i.target,
          status:
            i.status !== 'COMPLETED' && job.status === 'CANCELLED'
              ? 'CANCELLED'
              : (ITEM_STATUS[i.status] ?? job.status),
          // A one-target job's failure is often recorded on the job alone.
          error: i.error?.message ?? (items.length === 1 ? job.error?.message : undefined),
        }))
      : [{ target: job.target, status: job.status, error: job.error?.message }];
    for (const c of covered) {
      const r = entry(c.target);
      if (r.jobId) continue;
      r.jobId = job.jobId;
      r.status = c.status;
      r.at = job.endedAt ?? job.startedAt ?? job.createdAt;
      if (c.error) r.error = c.error;
    }
  }
  for (const p of points) {
    const r = entry(p.target);
    if (!r.point || r.point.createdAt < p.createdAt) r.point = p;
  }
  return [...byTarget.values()].sort((a, b) =>
    (b.at ?? b.point?.createdAt ?? '').localeCompare(a.at ?? a.point?.createdAt ?? ''),
  );
}

export interface Series {
  /** Seconds since the epoch (uPlot's x). */
  x: number[];
  ys: number[][];
}

/**
 * Bytes protected and stored over time: after each point, the sum over targets of their newest
 * point's size (protected), and the running sum of every point's stored bytes (what the
 * repository grew by; prunes are not subtracted, the catalog keeps no record of them).
 */
export function bytesOverTime(points: readonly RecoveryPoint[]): Series {
  const sorted = [...points].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const latest = new Map<string, number>();
  let stored = 0;
  const x: number[] = [];
  const protectedBytes: number[] = [];
  const storedBytes: number[] = [];
  for (const p of sorted) {
    latest.set(p.target, p.bytesRead);
    stored += p.bytesStored;
    x.push(Date.parse(p.createdAt) / 1000);
    protectedBytes.push([...latest.values()].reduce((n, v) => n + v, 0));
    storedBytes.push(stored);
  }
  return { x, ys: [protectedBytes, storedBytes] };
}

/** Each finished job's duration in seconds at its end time, one series per kind. */
export function jobDurations(
  jobs: readonly Job[],
  kinds: readonly string[] = ['BACKUP', 'RESTORE'],
): Series {
  const done = jobs
    .filter((j) => j.startedAt && j.endedAt && kinds.includes(j.kind))
    .sort((a, b) => a.endedAt!.localeCompare(b.endedAt!));
  const x: number[] = [];
  const ys = kinds.map(() => [] as Array<number | null>);
  for (const j of done) {
    x.push(Date.parse(j.endedAt!) / 1000);
    const s = (Date.parse(j.endedAt!) - Date.parse(j.startedAt!)) / 1000;
    kinds.forEach((k, i) => ys[i]!.push(k === j.kind ? s : null));
  }
  return { x, ys: ys as number[][] };
}
