import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const packagesDir = fileURLToPath(new URL("./packages/", import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run the TypeScript sources of sibling packages, not their builds.
    alias: [{ find: /^@tdist\/([a-z-]+)$/, replacement: `${packagesDir}$1/src/index.ts` }],
  },
  test: {
    include: [
      "packages/*/src/**/*.test.ts",
      "packages/cli/bin/*.test.ts",
      "examples/*/src/**/*.test.ts",
      "bench/lib/*.test.ts",
      "bench/disagg/*.test.ts",
      "bench/soak/*.test.ts",
      "bench/chaos/*.test.ts",
      "scripts/*.test.ts",
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: ["default", "./scripts/summary-reporter.ts"],
  },
});
