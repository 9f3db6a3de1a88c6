import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The JSON report lets CI print a plain "N passed, N failed" line.
    reporters: ["default", ["json", { outputFile: "test-output/vitest.json" }]],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: integration files start servers; keep parallelism modest.
    maxWorkers: 2,
    minWorkers: 1
  }
})
