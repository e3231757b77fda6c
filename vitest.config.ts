import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The examples' own tests too (the CI consistency example is one), so no example rots.
    include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // Real-server tests open several sessions each; two files at a time suit a 2-core machine.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
