// One ESM bundle: starts in ~0.4 s where tsc output takes ~1.5 s (module loading dominates).
import { build } from "esbuild"

await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  platform: "node",
  // The oldest line package.json "engines" admits (test/deploy.test.ts checks): the same bundle
  // runs on Node 20 and on the Node 24 that Docker and the flake ship.
  target: "node20",
  format: "esm",
  outfile: "dist/main.mjs",
  sourcemap: true,
  logLevel: "warning",
  // undici and friends `require()` node built-ins from inside the ESM bundle.
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" }
})
