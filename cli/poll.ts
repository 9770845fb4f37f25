/** How the CLI paces its looks at a job it waits for. */
import type { JobProgress } from '../kernel/model';

/**
 * How long `--wait` sleeps between two looks at a job it has waited on for `waitedMs`: 100 ms at
 * first, then a twentieth of the wait so far, at most 1 s. A short job is seen ending within
 * about 0.1 s (a fixed 500 ms cost a backup of a few seconds a tenth of its time), a long one
 * costs the API one request a second, and the end is seen at most 5 % late.
 *
 * With the job's `progress`, the next look is when its ETA predicts the end (from when the agent
 * reported it), at most 0.5 s away while the bytes still move (or a twentieth of the wait, if
 * longer), and every 100 ms once every byte is moved (only the point's commit is left): the end
 * of a job of a few seconds is then seen within about 0.1 s, and the API (which shares the local
 * agent's event loop in `stowage start`) is not asked ten times a second while the bytes move.
 */
export function pollDelay(waitedMs: number, progress?: JobProgress, now = Date.now()): number {
  const base = Math.min(1000, Math.max(100, waitedMs / 20));
  if (!progress?.bytesTotal) return base;
  if (progress.bytesDone >= progress.bytesTotal) return 100;
  const reported = Date.parse(progress.updatedAt);
  if (progress.etaSeconds === undefined || !(progress.rate > 0) || Number.isNaN(reported)) {
    return base;
  }
  const untilEnd = reported + progress.etaSeconds * 1000 - now;
  return Math.min(Math.max(base, 500), Math.max(100, untilEnd));
}
