/** How the CLI paces its looks at a job it waits for. */
import type { JobProgress } from '../kernel/model';

/**
 * How long `--wait` sleeps between two looks at a job it has waited on for `waitedMs`: 100 ms at
 * first, then a twentieth of the wait so far, at most 1 s. A short job is seen ending within
 * about 0.1 s (a fixed 500 ms cost a backup of a few seconds a tenth of its time), a long one
 * costs the API one request a second, and the end is seen at most 5 % late.
 *
 * With the job's `progress`, never past the end its ETA predicts (from when the agent reported
 * it), and every 100 ms once every byte is moved (only the point's commit is left): the end of a
 * job of a few seconds is then seen within about 0.1 s, not a twentieth of its time late.
 */
export function pollDelay(waitedMs: number, progress?: JobProgress, now = Date.now()): number {
  const base = Math.min(1000, Math.max(100, waitedMs / 20));
  if (!progress?.bytesTotal) return base;
  if (progress.bytesDone >= progress.bytesTotal) return 100;
  const reported = Date.parse(progress.updatedAt);
  if (progress.etaSeconds === undefined || !(progress.rate > 0) || Number.isNaN(reported)) {
    return base;
  }
  return Math.min(base, Math.max(100, reported + progress.etaSeconds * 1000 - now));
}
