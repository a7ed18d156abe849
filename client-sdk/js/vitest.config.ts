import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["fake-indexeddb/auto"],
    environment: "node",
    testTimeout: 20_000,
  },
});
