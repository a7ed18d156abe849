import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  // The SDK runs in browsers: test tus-js-client's browser build (Blob sources), as esbuild bundles it.
  resolve: {
    alias: {
      "tus-js-client": fileURLToPath(new URL("node_modules/tus-js-client/lib.esm/browser/index.js", import.meta.url)),
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["fake-indexeddb/auto"],
    environment: "node",
    testTimeout: 20_000,
  },
});
