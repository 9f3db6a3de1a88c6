import type { ControlLawName } from "../src/Admission/ControlLaw.js"
import { arrivals } from "./Clients.js"
import { type Engine, type LimiterConfig, type RunInput, run } from "./Engine.js"
import { runReal } from "./RealEngine.js"
import { metrics, type Row } from "./Report.js"
import { seeded } from "./Random.js"
import type { Scenario } from "./Scenarios.js"
import { Upstream } from "./Upstream.js"

/** A limiter set-up to compare: a law, and whether cap 429s are told from rate 429s. */
export interface Variant {
  readonly name: string
  readonly law: ControlLawName
  readonly concurrencyClassifier: boolean
}

/** Each law with the cap classifier (the classifier is not part of the law). */
export const variants: ReadonlyArray<Variant> = (["adr009", "learning"] as const).map((name) => lawVariant(name))

export function lawVariant(name: ControlLawName): Variant {
  return { name, law: name, concurrencyClassifier: true }
}

/** Today's sidecar: ADR-009, and a cap 429 read as a rate signal. */
export const today: Variant = { name: "adr009, no cap classifier", law: "adr009", concurrencyClassifier: false }

/** 37 s past a calendar minute: a fixed-window quota does not reset in step with the run. */
export const epoch = 1_700_000_017_000

const setUp = (s: Scenario, v: Variant, seed: number): readonly [LimiterConfig, RunInput] => [
  { law: v.law, baseRpm: s.baseRpm, bucketCapacity: 40, maxRetries: 2, maxInflight: 64, concurrencyClassifier: v.concurrencyClassifier },
  {
    epoch,
    durationMs: s.durationMs,
    warmupMs: s.warmupMs,
    arrivals: arrivals(s.clients, s.durationMs, seeded(seed)),
    upstream: new Upstream(s.upstream, epoch, seeded(seed + 1)),
    clientTimeoutMs: s.clients.timeoutMs,
    rng: seeded(seed + 2)
  }
]

/** One scenario under one variant on the pure discrete-event model (Engine.ts): synchronous, milliseconds. */
export const runScenario = (s: Scenario, v: Variant, seed = 1, engine: Engine = run): Row => {
  const trace = engine(...setUp(s, v, seed))
  return { scenario: s, law: v.name, m: metrics(s, trace) }
}

/** The same on the real admission code and TestClock (RealEngine.ts): seconds. */
export const runScenarioReal = async (s: Scenario, v: Variant, seed = 1): Promise<Row> => {
  const trace = await runReal(...setUp(s, v, seed))
  return { scenario: s, law: v.name, m: metrics(s, trace) }
}
