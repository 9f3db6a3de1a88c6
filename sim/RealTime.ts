import { spawn } from "node:child_process"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import type { ControlLawName } from "../src/Admission/ControlLaw.js"
import { arrivals, type Arrival } from "./Clients.js"
import { seeded } from "./Random.js"
import { runReal } from "./RealEngine.js"
import { epoch as simEpoch } from "./Run.js"
import { type Scenario, scenarios } from "./Scenarios.js"
import type { AttemptRecord, RequestRecord, Trace } from "./Trace.js"
import { Upstream } from "./Upstream.js"

/**
 * The simulator checked against the real process: the built sidecar (bin/nvidia-sidecar.mjs)
 * in front of a mock upstream that answers with the simulator's own upstream model (sim/Upstream.ts:
 * scenario 1a, a 30 RPM sliding 60 s quota, 429s without Retry-After, 0.5–3 s answers), fed by
 * the simulator's clients (same seed: same arrivals and priorities) in real time. The same run is
 * then simulated (RealEngine on TestClock, same duration) and the figures set side by side.
 * Used by test/LawRealTime.test.ts (90 s) and `npm run bench -- --suite law` (300 s).
 */
export interface CheckFigures {
  /** Upstream 200s over the run. */
  readonly upstreamOk: number
  readonly upstream429: number
  /** 429 share of upstream answers over the run. */
  readonly share429: number
  /** Upstream 200s in the last `lastSeconds` of the offered load. */
  readonly okLast: number
  /** okLast / what the quota allows in that time. */
  readonly efficiencyLast: number
  /** Responses with status 429 the clients saw (sidecar-made or relayed). */
  readonly client429: number
  readonly clientOk: number
  /** Clients still waiting when the run ended (queued beyond the quota: by design). */
  readonly unfinished: number
  /** Client-side statuses other than 200 and 429 (none expected). */
  readonly otherStatuses: number
}

export interface CheckResult {
  readonly scenario: string
  readonly law: ControlLawName
  readonly seconds: number
  readonly lastSeconds: number
  readonly quotaRpm: number
  readonly real: CheckFigures
  readonly sim: CheckFigures
  /** The sidecar's /status control section at the end. */
  readonly control: unknown
  /** control_state_changed log lines the sidecar wrote. */
  readonly stateChanges: number
  readonly wallSeconds: number
}

export interface CheckOptions {
  readonly seconds: number
  /** The tail over which upstream successes are compared with the quota. */
  readonly lastSeconds: number
  /** Repository root: where bin/nvidia-sidecar.mjs is. */
  readonly root: string
  readonly law?: ControlLawName
  readonly seed?: number
  readonly log?: (line: string) => void
}

/** Answers after the last arrival: the slowest upstream answer (3 s) plus room. */
const graceMs = 3_500

export const realTimeCheck = async (options: CheckOptions): Promise<CheckResult> => {
  const started = performance.now()
  const base = scenarios.find((s) => s.id === "1a")!
  const scenario: Scenario = { ...base, durationMs: options.seconds * 1000 }
  const law = options.law ?? "learning"
  const seed = options.seed ?? 1
  const log = options.log ?? (() => {})
  const quotaRpm = scenario.capacityRpm(0)
  const offered = arrivals(scenario.clients, scenario.durationMs, seeded(seed))

  // The simulator first: the same situation on TestClock, a second or two.
  const simTrace = await runReal(
    { law, baseRpm: scenario.baseRpm, bucketCapacity: 40, maxRetries: 2, maxInflight: 64, concurrencyClassifier: true },
    {
      epoch: simEpoch, durationMs: scenario.durationMs + graceMs, warmupMs: 0, arrivals: offered,
      upstream: new Upstream(scenario.upstream, simEpoch, seeded(seed + 1)), clientTimeoutMs: scenario.clients.timeoutMs, rng: seeded(seed + 2)
    }
  )
  const sim = figures(simTrace, scenario, options.lastSeconds, quotaRpm)
  log(`simulated: ${JSON.stringify(sim)}`)

  // The real run: the mock answers with the same upstream model, in wall-clock epoch ms.
  const mock = await startMock(scenario, seed)
  const sidecar = await startSidecar(options.root, mock.url, law, scenario)
  try {
    const t0 = Date.now()
    mock.start(t0)
    const { requests, other } = await offer(sidecar.url, offered, t0, scenario.durationMs + graceMs)
    const control = await getJson(`${sidecar.url}/status`).then((s) => (s as { control?: unknown }).control)
    const real = {
      ...figures({ requests, attempts: mock.attempts, rate: [], inflightLimit: [], sentDuringRetryAfter: 0, longestStall: 0 }, scenario, options.lastSeconds, quotaRpm),
      otherStatuses: other
    }
    log(`real: ${JSON.stringify(real)}`)
    return {
      scenario: `${scenario.id}: ${scenario.title}`, law, seconds: options.seconds, lastSeconds: options.lastSeconds, quotaRpm, real, sim, control,
      stateChanges: (sidecar.output().match(/control_state_changed/g) ?? []).length,
      wallSeconds: (performance.now() - started) / 1000
    }
  } finally {
    await sidecar.stop()
    await mock.close()
  }
}

/** Relative gap of each figure, real against simulated (counts below 10 compared as ±1). */
export const gaps = (r: CheckResult) => {
  const rel = (a: number, b: number) => (Math.max(a, b) < 10 ? Math.max(0, Math.abs(a - b) - 1) / 10 : Math.abs(a - b) / Math.max(a, b))
  return {
    upstreamOk: rel(r.real.upstreamOk, r.sim.upstreamOk),
    okLast: rel(r.real.okLast, r.sim.okLast),
    upstream429: rel(r.real.upstream429, r.sim.upstream429),
    clientOk: rel(r.real.clientOk, r.sim.clientOk)
  }
}

function figures(t: Trace, s: Scenario, lastSeconds: number, quotaRpm: number): CheckFigures {
  const from = s.durationMs - lastSeconds * 1000
  const ok = t.attempts.filter((a) => a.status === 200)
  const okLast = ok.filter((a) => a.at >= from && a.at < s.durationMs).length
  return {
    upstreamOk: ok.length,
    upstream429: t.attempts.length - ok.length,
    share429: t.attempts.length === 0 ? 0 : (t.attempts.length - ok.length) / t.attempts.length,
    okLast,
    efficiencyLast: okLast / ((quotaRpm * lastSeconds) / 60),
    client429: t.requests.filter((r) => r.outcome === "relayed429").length,
    clientOk: t.requests.filter((r) => r.outcome === "ok").length,
    unfinished: t.requests.filter((r) => r.outcome === "pending" || r.outcome === "timeout").length,
    otherStatuses: 0
  }
}

interface Mock {
  readonly url: string
  readonly attempts: Array<AttemptRecord>
  start(t0: number): void
  close(): Promise<void>
}

const completion = JSON.stringify({
  id: "chatcmpl-sim", object: "chat.completion", created: 1700000000, model: "m",
  choices: [{ index: 0, message: { role: "assistant", content: "pong" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 }
})

/** The simulator's upstream behind HTTP; calls before `start` (none expected) are answered 200 uncounted. */
async function startMock(scenario: Scenario, seed: number): Promise<Mock> {
  const attempts: Array<AttemptRecord> = []
  let upstream: Upstream | undefined
  let t0 = 0
  const server: Server = createServer((req, res) => {
    req.resume()
    req.on("end", () => {
      if (req.method === "GET" && (req.url ?? "").startsWith("/v1/models")) {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [{ id: "m", object: "model", owned_by: "sim" }] }))
        return
      }
      if (upstream === undefined) return void res.writeHead(200, { "content-type": "application/json" }).end(completion)
      const at = Date.now()
      const model = "m"
      const answer = upstream.arrive(at, model)
      attempts.push({ at: at - t0, status: answer.status, kind: answer.kind })
      const timer = setTimeout(() => {
        if (answer.status === 200) {
          upstream?.done(model)
          res.writeHead(200, { "content-type": "application/json" }).end(completion)
        } else {
          const headers: Record<string, string> = { "content-type": "application/json" }
          if (answer.retryAfterMs !== undefined) headers["retry-after"] = String(answer.retryAfterMs / 1000)
          res.writeHead(429, headers).end(JSON.stringify({ error: { message: answer.body, type: "rate_limit" } }))
        }
      }, answer.afterMs)
      res.on("close", () => clearTimeout(timer))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    attempts,
    start: (at) => {
      t0 = at
      upstream = new Upstream(scenario.upstream, at, seeded(seed + 1))
    },
    close: () => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** The built sidecar as a user runs it, configured as the simulator configures the real engine. */
async function startSidecar(root: string, upstream: string, law: ControlLawName, s: Scenario) {
  const timeout = String(s.clients.timeoutMs / 1000)
  const child = spawn(process.execPath, ["bin/nvidia-sidecar.mjs"], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? "", SIDECAR_HOST: "127.0.0.1", SIDECAR_PORT: "0", SIDECAR_METRICS_PORT: "0",
      SIDECAR_UPSTREAM: upstream, SIDECAR_API_KEY: "sim-key", SIDECAR_RATE_CONTROL: law,
      SIDECAR_RATE_RPM: String(s.baseRpm), SIDECAR_BUCKET_CAPACITY: "40", SIDECAR_MAX_RETRIES: "2", SIDECAR_MAX_INFLIGHT: "64",
      SIDECAR_QUEUE_MAX: "100000", SIDECAR_QUEUE_FULL_POLICY: "reject", SIDECAR_LOW_TIMEOUT: timeout, SIDECAR_QUEUE_TIMEOUT: timeout,
      SIDECAR_TIMEOUT: timeout, SIDECAR_DRAIN_TIMEOUT: "1"
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  child.stdout.on("data", (d: Buffer) => (out += d.toString()))
  child.stderr.on("data", (d: Buffer) => (out += d.toString()))
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar did not start:\n${out}`)), 15_000)
    const check = () => {
      const m = /"server":"proxy","address":"http:\/\/[^:]+:(\d+)"/.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        resolve(Number(m[1]))
      }
    }
    child.stdout.on("data", check)
    void exited.then(() => {
      clearTimeout(timer)
      reject(new Error(`sidecar exited early:\n${out}`))
    })
  })
  return {
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    stop: async () => {
      child.kill("SIGTERM")
      const killed = setTimeout(() => child.kill("SIGKILL"), 3_000)
      await exited
      clearTimeout(killed)
    }
  }
}

/** Each arrival at its time; at `endMs` whoever still waits gives up (counted unfinished). */
async function offer(url: string, offered: ReadonlyArray<Arrival>, t0: number, endMs: number): Promise<{ requests: Array<RequestRecord>; other: number }> {
  const stop = new AbortController()
  let other = 0
  const one = async (a: Arrival): Promise<RequestRecord> => {
    const wait = t0 + a.at - Date.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    const record = (outcome: RequestRecord["outcome"]): RequestRecord => ({ priority: a.priority, arrivedAt: a.at, outcome, queueMs: 0 })
    try {
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-priority": a.priority, authorization: "Bearer client" },
        body: JSON.stringify({ model: a.model, messages: [{ role: "user", content: "ping" }], max_tokens: 4 }),
        signal: stop.signal
      })
      await res.arrayBuffer()
      if (res.status !== 200 && res.status !== 429) other++
      return record(res.status === 200 ? "ok" : res.status === 429 ? "relayed429" : "pending")
    } catch {
      return record("pending")
    }
  }
  const ending = setTimeout(() => stop.abort(), Math.max(0, t0 + endMs - Date.now()))
  try {
    return { requests: await Promise.all(offered.map(one)), other }
  } finally {
    clearTimeout(ending)
  }
}

async function getJson(url: string): Promise<unknown> {
  const res = await fetch(url)
  return res.json()
}

/** Markdown: real process next to the simulator, figure by figure, with the agreement verdict. */
export const checkTable = (r: CheckResult): string => {
  const g = gaps(r)
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`
  const rows: Array<readonly [string, string, string, string]> = [
    ["upstream 200s", String(r.real.upstreamOk), String(r.sim.upstreamOk), pct(g.upstreamOk)],
    [`upstream 200s in the last ${r.lastSeconds} s (quota allows ${(r.quotaRpm * r.lastSeconds) / 60})`, String(r.real.okLast), String(r.sim.okLast), pct(g.okLast)],
    ["efficiency over that tail", r.real.efficiencyLast.toFixed(3), r.sim.efficiencyLast.toFixed(3), "—"],
    ["upstream 429s", String(r.real.upstream429), String(r.sim.upstream429), pct(g.upstream429)],
    ["upstream 429 share", pct(r.real.share429), pct(r.sim.share429), "—"],
    ["client 200s", String(r.real.clientOk), String(r.sim.clientOk), pct(g.clientOk)],
    ["client 429s", String(r.real.client429), String(r.sim.client429), "—"],
    ["clients still queued at the end", String(r.real.unfinished), String(r.sim.unfinished), "—"]
  ]
  const agree = Object.values(g).every((x) => x <= 0.1)
  return [
    `${r.scenario}; law ${r.law}; ${r.seconds} s of offered load (seed 1 arrivals), real process vs simulator (real engine, same run)`,
    "",
    "| figure | real process | simulator | gap |",
    "|---|---|---|---|",
    ...rows.map((row) => `| ${row.join(" | ")} |`),
    "",
    `agree within 10 %: ${agree ? "yes" : "**no**"}; sidecar /status control at the end: ${JSON.stringify(r.control)}; ${r.stateChanges} control_state_changed log lines; ${r.wallSeconds.toFixed(0)} s wall clock`
  ].join("\n")
}
