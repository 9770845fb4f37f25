import { defineConfig } from 'vitest/config';

// Suites that drive the real engines share one dockerd: run files one at a time so they do not
// compete for the machine's 2 cores or trip over each other's containers.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    // The daily 04:00 UTC prune of every `stowage start` a test runs would add a PRUNE job to a
    // suite that crosses that hour; the tests of the scheduled prune set their own schedule.
    env: { STOWAGE_PRUNE_SCHEDULE: 'off' },
  },
});
