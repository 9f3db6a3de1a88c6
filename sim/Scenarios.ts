import { type ClientSpec, defaultMix } from "./Clients.js"
import type { Metrics } from "./Report.js"
import { type QuotaShape, shapeNames, type UpstreamSpec } from "./Upstream.js"

/** One simulated situation: an upstream, the sidecar's configured rate, the clients, the targets. */
export interface Scenario {
  readonly id: string
  readonly title: string
  readonly baseRpm: number
  readonly upstream: UpstreamSpec
  readonly clients: ClientSpec
  readonly durationMs: number
  readonly warmupMs: number
  /** Quota changes after the start, for the convergence figures. */
  readonly steps: ReadonlyArray<{ readonly at: number; readonly quotaRpm: number }>
  /** What the upstream can serve per minute at t (quota, or concurrency / generation time). */
  readonly capacityRpm: (t: number) => number
  /** The targets for the default law; each names what it checks. */
  readonly targets: ReadonlyArray<Target>
}

export interface Target {
  readonly name: string
  readonly met: (m: Metrics) => boolean
}

const MIN = 60_000
const common = { durationMs: 30 * MIN, warmupMs: 2 * MIN } as const
const clients = (offeredRpm: number, model = "m"): ClientSpec => ({ offeredRpm, mix: defaultMix, timeoutMs: 300_000, model })
const fast: UpstreamSpec["latencyMs"] = [500, 3_000]

const quota30 = (shape: QuotaShape, retryAfter: boolean, id: string): Scenario => ({
  id,
  title: `quota 30 ${shapeNames[shape]}${retryAfter ? ", 429s with Retry-After" : ""}, configured 60, offered 90`,
  baseRpm: 60,
  upstream: { shape, quotaRpm: () => 30, retryAfter, latencyMs: fast },
  clients: clients(90),
  ...common,
  steps: [],
  capacityRpm: () => 30,
  targets: retryAfter
    ? [{ name: "no send during Retry-After", met: (m) => m.sentDuringRetryAfter === 0 }]
    : [
      { name: "efficiency >= 0.95", met: (m) => m.efficiency >= 0.95 },
      { name: "429 share <= 3 %", met: (m) => m.share429 <= 0.03 },
      { name: "0 client 429s", met: (m) => m.relayed429 === 0 }
    ]
})

// A token-bucket quota of 40 RPM holds 6.7 calls at once: the sidecar's start-up burst of 40
// meets one 429 there whatever the law, so 2c asks for the efficiency only.
const quotaIsBase = (shape: QuotaShape, id: string): Scenario => ({
  id,
  title: `quota = configured = 40 ${shapeNames[shape]}, offered 60`,
  baseRpm: 40,
  upstream: { shape, quotaRpm: () => 40, retryAfter: false, latencyMs: fast },
  clients: clients(60),
  ...common,
  steps: [],
  capacityRpm: () => 40,
  targets: [
    ...(shape === "bucket" ? [] : [{ name: "0 upstream 429s", met: (m: Metrics) => m.upstream429 === 0 }]),
    { name: "efficiency >= 0.99", met: (m) => m.efficiency >= 0.99 }
  ]
})

const stepQuota = (t: number) => (t < 10 * MIN ? 40 : t < 20 * MIN ? 20 : 40)

const concurrency = (stated: boolean, id: string): Scenario => ({
  id,
  title: `concurrency cap 4 (${stated ? "NIM body N/N" : "body without N"}), 30 s generations, configured 40, offered 20`,
  baseRpm: 40,
  upstream: { shape: "sliding", quotaRpm: () => 40, retryAfter: false, concurrencyCap: { limit: 4, stated }, latencyMs: [30_000, 30_000] },
  clients: clients(20),
  ...common,
  steps: [],
  capacityRpm: () => (4 * MIN) / 30_000,
  targets: [
    { name: "rate not cut", met: (m) => m.minRpm >= 40 },
    { name: "in-flight limit settles at 4", met: (m) => m.finalInflightLimit === 4 && m.limitAt4Share >= 0.9 },
    { name: "0 client 429s", met: (m) => m.relayed429 === 0 }
  ]
})

export const scenarios: ReadonlyArray<Scenario> = [
  quota30("sliding", false, "1a"),
  quota30("fixed", false, "1b"),
  quota30("bucket", false, "1c"),
  quotaIsBase("sliding", "2"),
  quotaIsBase("fixed", "2b"),
  quotaIsBase("bucket", "2c"),
  {
    id: "3",
    title: "quota 40 -> 20 at 10 min -> 40 at 20 min (sliding 60 s), configured 40, offered 60",
    baseRpm: 40,
    upstream: { shape: "sliding", quotaRpm: stepQuota, retryAfter: false, latencyMs: fast },
    clients: clients(60),
    ...common,
    steps: [{ at: 10 * MIN, quotaRpm: 20 }, { at: 20 * MIN, quotaRpm: 40 }],
    capacityRpm: stepQuota,
    targets: [
      { name: "within 10 % 60 s after the drop", met: (m) => (m.converge[0]?.seconds ?? Infinity) <= 60 },
      { name: "within 10 % 120 s after the rise", met: (m) => (m.converge[1]?.seconds ?? Infinity) <= 120 },
      { name: "efficiency >= 0.9", met: (m) => m.efficiency >= 0.9 }
    ]
  },
  {
    id: "4",
    title: "burst of 10 429s at 10 min, quota = configured = 40 (sliding 60 s), offered 60",
    baseRpm: 40,
    upstream: { shape: "sliding", quotaRpm: () => 40, retryAfter: false, spurious: { at: 10 * MIN, count: 10 }, latencyMs: fast },
    clients: clients(60),
    ...common,
    steps: [],
    capacityRpm: () => 40,
    targets: [
      { name: "rate >= 0.7x", met: (m) => m.minRpmAfterBurst >= 0.7 * 40 },
      { name: "back to configured within 60 s", met: (m) => m.backToBaseSeconds <= 60 }
    ]
  },
  concurrency(true, "5"),
  concurrency(false, "5b"),
  quota30("sliding", true, "6"),
  quota30("fixed", true, "6b"),
  quota30("bucket", true, "6c")
]
