import { defineConfig } from 'vitest/config';

// Integration tests start real PostgreSQL servers; on a 2-core machine a few files at a time is the
// most that keeps timings meaningful.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/support/temp-dir-cleanup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    maxWorkers: 2,
    fileParallelism: true,
    reporters: ['default'],
  },
});
