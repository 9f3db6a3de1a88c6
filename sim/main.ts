import { seedTable, table } from "./Report.js"
import { runScenario, today, variants } from "./Run.js"
import { scenarios } from "./Scenarios.js"

// `npm run sim [-- ids...] [-- --seeds N]`: every scenario (or the named ones) under each law,
// one table; with --seeds, each run N times with different arrivals and latencies, summarised.
const args = process.argv.slice(2)
const seedsAt = args.indexOf("--seeds")
const seeds = seedsAt < 0 ? 1 : Number(args[seedsAt + 1])
const only = args.filter((_, i) => seedsAt < 0 || (i !== seedsAt && i !== seedsAt + 1))
const started = performance.now()
const chosen = scenarios.filter((s) => only.length === 0 || only.includes(s.id))
const setups = chosen.flatMap((s) => [...variants, ...(s.upstream.concurrencyCap === undefined ? [] : [today])].map((v) => [s, v] as const))
if (seeds === 1) {
  console.log(table(setups.map(([s, v]) => runScenario(s, v))))
} else {
  console.log(seedTable(setups.map(([s, v]) => Array.from({ length: seeds }, (_, i) => runScenario(s, v, 1 + 7 * i)))))
}
const runs = setups.length * seeds
console.log(`\n${runs} runs of 30 simulated minutes in ${((performance.now() - started) / 1000).toFixed(1)} s`)
