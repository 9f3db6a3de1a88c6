import { table } from "./Report.js"
import { runScenario, today, variants } from "./Run.js"
import { scenarios } from "./Scenarios.js"

// `npm run sim [-- ids...]`: every scenario (or the named ones) under each law, one table.
const only = process.argv.slice(2)
const started = performance.now()
const rows = scenarios
  .filter((s) => only.length === 0 || only.includes(s.id))
  .flatMap((s) => [
    ...variants.map((v) => runScenario(s, v)),
    ...(s.upstream.concurrencyCap === undefined ? [] : [runScenario(s, today)])
  ])
console.log(table(rows))
console.log(`\n${rows.length} runs of 30 simulated minutes in ${((performance.now() - started) / 1000).toFixed(1)} s`)
