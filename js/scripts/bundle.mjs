// Bundles the browser code with esbuild: the demo page (demo/bundle/app.js)
// and, with --size, the package's browser entry, printing its minified and
// gzipped sizes.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const root = new URL("..", import.meta.url).pathname;
await build({
  entryPoints: [`${root}demo/app.ts`],
  outfile: `${root}demo/bundle/app.js`,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
});
if (process.argv.includes("--size")) {
  const out = await build({
    entryPoints: [`${root}src/index.ts`],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    write: false,
  });
  const code = out.outputFiles[0].contents;
  console.log(`connectoid browser bundle: ${code.length} bytes minified, ${gzipSync(code, { level: 9 }).length} bytes gzipped`);
}
