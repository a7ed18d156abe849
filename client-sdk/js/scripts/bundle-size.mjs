// Bundle size of the SDK for browsers: esbuild (ESM, minified), gzipped, without and with yjs.
// Usage: npm run bundle-size
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

async function size(entry, external) {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    external,
    write: false,
  });
  const code = result.outputFiles[0].contents;
  return { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
}

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
const rows = [
  ["index, without yjs", await size("src/index.ts", ["yjs"])],
  ["index, with yjs", await size("src/index.ts", [])],
  ["sw (service worker), without yjs", await size("src/sw.ts", ["yjs"])],
  ["sw (service worker), with yjs", await size("src/sw.ts", [])],
];
for (const [name, s] of rows) console.log(`${name.padEnd(34)} minified ${kb(s.min).padStart(10)}   gzipped ${kb(s.gzip).padStart(9)}`);
