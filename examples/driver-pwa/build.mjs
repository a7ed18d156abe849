// Builds the PWA into dist/: the two pages' bundles, the service worker (with the list of app-shell files
// and a content hash as its cache version), the static files and the icons.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { png } from "./icons.mjs";

const out = "dist";
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "icons"), { recursive: true });
cpSync("static", out, { recursive: true });
writeFileSync(join(out, "icons", "icon-192.png"), png(192));
writeFileSync(join(out, "icons", "icon-512.png"), png(512));
writeFileSync(join(out, "icons", "icon-maskable-512.png"), png(512, true));

await build({
  entryPoints: ["src/driver.ts", "src/dispatcher.ts"],
  outdir: out,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
  logLevel: "warning",
});

// The app shell: every file in dist/ except source maps; sw.js itself is fetched by the browser.
const shell = [];
const walk = (dir) => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path);
    else if (!path.endsWith(".map")) shell.push(path.slice(out.length));
  }
};
walk(out);
shell.sort();
const hash = createHash("sha256");
for (const path of shell) hash.update(path).update(readFileSync(join(out, path)));
const version = hash.digest("hex").slice(0, 12);

await build({
  entryPoints: ["src/sw.ts"],
  outfile: join(out, "sw.js"),
  bundle: true,
  format: "iife",
  target: "es2022",
  minify: true,
  define: { __SHELL__: JSON.stringify(["/", ...shell]), __VERSION__: JSON.stringify(version) },
  logLevel: "warning",
});
console.log(`built ${out}/: ${shell.length} app-shell files, version ${version}`);
