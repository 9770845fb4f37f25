/** How the CLI paces its looks at a job it waits for. */

/**
 * How long `--wait` sleeps between two looks at a job it has waited on for `waitedMs`: 100 ms at
 * first, then a twentieth of the wait so far, at most 1 s. A short job is seen ending within
 * about 0.1 s (a fixed 500 ms cost a backup of a few seconds a tenth of its time), a long one
 * costs the API one request a second, and the end is seen at most 5 % late.
 */
export function pollDelay(waitedMs: number): number {
  return Math.min(1000, Math.max(100, waitedMs / 20));
}
