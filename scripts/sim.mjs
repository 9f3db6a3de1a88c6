// `npm run sim`: bundle the simulator (sim/ + the laws under src/) and run it on simulated time.
import { build } from "esbuild"

await build({
  entryPoints: ["sim/main.ts"],
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  outfile: "dist/sim.mjs",
  logLevel: "warning"
})
await import(new URL("../dist/sim.mjs", import.meta.url).href)
