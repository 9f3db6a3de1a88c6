import { comparison, type Row, seedTable, table } from "./Report.js"
import { runScenario, runScenarioReal, today, variants } from "./Run.js"
import { scenarios } from "./Scenarios.js"

// `npm run sim [-- ids...] [-- --pure | --compare] [-- --seeds N]`: every scenario (or the named
// ones) under each law, one table. By default the real admission code runs on TestClock
// (RealEngine.ts); --pure runs the discrete-event model (Engine.ts) instead, --compare both,
// with the real engine's table followed by the gap per figure. --seeds N repeats each run N
// times with different arrivals and latencies and summarises.
const args = process.argv.slice(2)
const flag = (name: string) => args.includes(name)
const seedsAt = args.indexOf("--seeds")
const seeds = seedsAt < 0 ? 1 : Number(args[seedsAt + 1])
const only = args.filter((a, i) => !a.startsWith("--") && (seedsAt < 0 || i !== seedsAt + 1))
const engine = flag("--pure") ? "pure" : flag("--compare") ? "compare" : "real"
const started = performance.now()
const chosen = scenarios.filter((s) => only.length === 0 || only.includes(s.id))
const setups = chosen.flatMap((s) => [...variants, ...(s.upstream.concurrencyCap === undefined ? [] : [today])].map((v) => [s, v] as const))
const seedList = Array.from({ length: seeds }, (_, i) => 1 + 7 * i)

console.log(`engine: ${engine === "pure" ? "pure discrete-event model (sim/Engine.ts)" : "real admission code on TestClock (sim/RealEngine.ts)"}\n`)
if (engine === "pure") {
  const groups = setups.map(([s, v]) => seedList.map((seed) => runScenario(s, v, seed)))
  console.log(seeds === 1 ? table(groups.map((g) => g[0]!)) : seedTable(groups))
} else {
  const groups: Array<Array<Row>> = []
  for (const [s, v] of setups) {
    const group: Array<Row> = []
    for (const seed of seedList) {
      const t0 = performance.now()
      group.push(await runScenarioReal(s, v, seed))
      process.stderr.write(`${s.id} ${v.name} seed ${seed}: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`)
    }
    groups.push(group)
  }
  console.log(seeds === 1 ? table(groups.map((g) => g[0]!)) : seedTable(groups))
  if (engine === "compare" && seeds === 1) {
    console.log("\nreal engine vs pure engine, same seed:\n")
    console.log(comparison(setups.map(([s, v], i) => [groups[i]![0]!, runScenario(s, v)] as const)))
  }
}
const runs = setups.length * seeds * (engine === "compare" ? 2 : 1)
console.log(`\n${runs} runs of 30 simulated minutes in ${((performance.now() - started) / 1000).toFixed(1)} s`)
