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
  },
});
