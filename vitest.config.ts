import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{lib,pci,virtio,devices,test}/**/*.test.ts'],
    // Tap and guest tests create network namespaces; keep files in one worker pool but never in parallel
    // inside a file. Two cores: more workers than that only thrash.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
