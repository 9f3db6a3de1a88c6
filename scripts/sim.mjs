// `npm run sim`: bundle the simulator (sim/ + the admission code under src/; packages stay
// external) and run it on simulated time.
import { build } from "esbuild"

await build({
  entryPoints: ["sim/main.ts"],
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  outfile: "dist/sim.mjs",
  packages: "external",
  logLevel: "warning"
})
await import(new URL("../dist/sim.mjs", import.meta.url).href)
