import { Effect } from "effect"
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type GaugeValues, Metrics, ownStatuses, upstreamErrorStatuses } from "../src/Observability/Metrics.js"
import { priorities } from "../src/Common/Priority.js"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { metricValue as value, until } from "./support/Observe.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"
import { hasCommand, runTool } from "./support/Tool.js"

let upstream: MockUpstream
let sidecar: RunningSidecar
/** The scrape taken before the first request. */
let initial: string
beforeAll(async () => {
  upstream = await MockUpstream.start()
  upstream.handler = (req, res) => json(res, req.json?.model === "nvidia/throttled" ? 429 : 200, { ok: true })
  // 60 RPM, burst 2, no internal retries: a backlog forms and 429s reach the client.
  sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 60, bucketCapacity: 2, maxRetries: 0 })
  initial = await scrape()
})
afterAll(async () => {
  await sidecar.close()
  await upstream.close()
})

const scrape = async () => {
  const res = await request(sidecar.metricsUrl)
  expect(res.headers["content-type"]).toContain("text/plain")
  return res.body.text()
}
const chat = (model: string, priority: string) =>
  request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", "x-priority": priority }, body: JSON.stringify({ model }) }).then((r) => r.body.text())

const promtool = hasCommand("promtool")
// promtool prints one "<metric> <problem>" line per lint problem (exit 3) and "error ..." on a
// parse failure (exit 1); any other line is about the machine, not the metrics.
const promtoolCheck = (text: string) => {
  const families = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]))
  const run = runTool("promtool", ["check", "metrics"], { input: text, about: (line) => families.has(line.split(" ")[0]) })
  return { ...run, families: families.size }
}

describe("Prometheus metrics", () => {
  it("has the known label sets at zero before any request, so the first event is an increase", () => {
    expect(initial).not.toMatch(/^sidecar_requests_total\{.*\} [1-9]/m)
    for (const priority of priorities) {
      for (const status of ownStatuses) expect(value(initial, `sidecar_requests_total{priority="${priority}",status="${status}"}`), `${priority} ${status}`).toBe(0)
      for (const histogram of ["sidecar_queue_latency_seconds", "sidecar_request_duration_seconds", "sidecar_stream_first_byte_seconds"]) {
        expect(value(initial, `${histogram}_count{priority="${priority}"}`), `${histogram} ${priority}`).toBe(0)
        expect(value(initial, `${histogram}_bucket{le="+Inf",priority="${priority}"}`), `${histogram} ${priority}`).toBe(0)
      }
    }
    for (const status of upstreamErrorStatuses) {
      expect(value(initial, `sidecar_upstream_errors_total{status_code="${status}",provider="primary"}`), String(status)).toBe(0)
    }
    expect(value(initial, `sidecar_upstream_latency_seconds_count{provider="primary"}`)).toBe(0)
    expect(value(initial, `sidecar_usage_tokens_total{type="prompt"}`)).toBe(0)
    expect(value(initial, `sidecar_usage_tokens_total{type="completion"}`)).toBe(0)
    expect(value(initial, "sidecar_quota_estimate_rpm")).toBe(0)
  })

  it.skipIf(!promtool)("passes promtool check metrics before any request", () => {
    const check = promtoolCheck(initial)
    expect(check.complaints).toEqual([])
    expect(check.status).toBe(0)
  })

  it("exposes every seed metric with its type, the provider label and Node process metrics, never a model id", async () => {
    await chat("nvidia/deepseek-ai/secret-model-name", "normal")
    const text = await scrape()
    const types: Record<string, string> = {
      sidecar_requests_total: "counter",
      sidecar_tokens_available: "gauge",
      sidecar_tokens_rate: "gauge",
      sidecar_queue_depth: "gauge",
      sidecar_queue_latency_seconds: "histogram",
      sidecar_upstream_latency_seconds: "histogram",
      sidecar_upstream_errors_total: "counter",
      sidecar_fallback_passthrough_total: "counter",
      sidecar_health_status: "gauge",
      sidecar_uptime_seconds: "gauge",
      sidecar_retreat_state: "gauge",
      sidecar_effective_rate_rpm: "gauge",
      sidecar_upstream_429_rate: "gauge",
      sidecar_request_duration_seconds: "histogram",
      sidecar_stream_first_byte_seconds: "histogram",
      sidecar_usage_tokens_total: "counter",
      sidecar_configured_rate_rpm: "gauge",
      sidecar_quota_estimate_rpm: "gauge",
      sidecar_queue_max: "gauge"
    }
    for (const [name, type] of Object.entries(types)) expect(text, name).toContain(`# TYPE ${name} ${type}`)
    expect(text).toContain("process_cpu_seconds_total")
    expect(text).toContain("nodejs_eventloop_lag_seconds")
    // Gauges that walk every open handle per scrape are left out; open fds are listed asynchronously.
    expect(text).not.toContain("nodejs_active_handles")
    if (process.platform === "linux") expect(value(text, "process_open_fds")).toBeGreaterThan(0)
    expect(text).toMatch(/sidecar_upstream_latency_seconds_count\{provider="primary"\} \d+/)
    expect(text).not.toContain("model")
    expect(value(text, "sidecar_effective_rate_rpm")).toBe(60)
    expect(value(text, "sidecar_health_status")).toBe(1)
  })

  it("shows the backlog per priority while it exists, and 429s in the error counters and the 429 rate", async () => {
    const backlog = [chat("nvidia/x", "low"), chat("nvidia/x", "low"), chat("nvidia/x", "high"), chat("nvidia/x", "low")]
    let during = ""
    await until(async () => {
      during = await scrape()
      return (value(during, "sidecar_queue_depth{priority=\"low\"}") ?? 0) + (value(during, "sidecar_queue_depth{priority=\"high\"}") ?? 0) >= 2
    })
    expect(value(during, "sidecar_queue_depth{priority=\"low\"}")).toBeGreaterThanOrEqual(1)
    expect((value(during, "sidecar_queue_depth{priority=\"low\"}") ?? 0) + (value(during, "sidecar_queue_depth{priority=\"high\"}") ?? 0)).toBeGreaterThanOrEqual(2)
    expect(value(during, "sidecar_tokens_available")).toBeLessThan(1)
    await Promise.all(backlog)
    await chat("nvidia/throttled", "urgent")
    const after = await scrape()
    expect(value(after, "sidecar_queue_depth{priority=\"low\"}")).toBe(0)
    expect(value(after, "sidecar_upstream_errors_total{status_code=\"429\",provider=\"primary\"}")).toBe(1)
    expect(value(after, "sidecar_requests_total{priority=\"urgent\",status=\"429\"}")).toBe(1)
    expect(value(after, "sidecar_upstream_429_rate")).toBeGreaterThan(0)
    expect(value(after, "sidecar_queue_latency_seconds_count{priority=\"low\"}")).toBeGreaterThanOrEqual(1)
  }, 20_000)

  it.skipIf(!promtool)("passes promtool check metrics", async () => {
    const text = await scrape()
    const check = promtoolCheck(text)
    expect(check.complaints).toEqual([])
    expect(check.status).toBe(0)
  })
})

const gauges: GaugeValues = {
  ready: true,
  uptimeSeconds: 1,
  tokens: 3,
  effectiveRpm: 30,
  mode: "retreat",
  rate429: 0.1,
  queueDepth: { urgent: 0, high: 0, normal: 2, low: 5 }
}

/** Runs `use` against a fresh registry and returns the rendered exposition. */
const rendered = (use: (metrics: Metrics["Type"]) => Effect.Effect<void>, values: GaugeValues = gauges) =>
  Effect.runPromise(
    Effect.gen(function*() {
      const metrics = yield* Metrics
      yield* use(metrics)
      return (yield* metrics.render(values)).body
    }).pipe(Effect.provide(Metrics.layer))
  )

describe("Metrics service", () => {
  it("records end-to-end durations per priority in their histogram", async () => {
    const text = await rendered((m) => Effect.all([m.requestDuration("high", 0.2), m.requestDuration("high", 7), m.requestDuration("low", 400)]))
    expect(value(text, `sidecar_request_duration_seconds_count{priority="high"}`)).toBe(2)
    expect(value(text, `sidecar_request_duration_seconds_sum{priority="high"}`)).toBeCloseTo(7.2)
    expect(value(text, `sidecar_request_duration_seconds_bucket{le="0.25",priority="high"}`)).toBe(1)
    expect(value(text, `sidecar_request_duration_seconds_bucket{le="10",priority="high"}`)).toBe(2)
    expect(value(text, `sidecar_request_duration_seconds_bucket{le="300",priority="low"}`)).toBe(0)
    expect(value(text, `sidecar_request_duration_seconds_bucket{le="+Inf",priority="low"}`)).toBe(1)
    expect(value(text, `sidecar_request_duration_seconds_count{priority="normal"}`)).toBe(0)
    expect(value(text, `sidecar_stream_first_byte_seconds_count{priority="high"}`)).toBe(0)
  })

  it("records streamed first-byte times per priority in their own histogram", async () => {
    const text = await rendered((m) => Effect.all([m.streamFirstByte("urgent", 0.04), m.streamFirstByte("urgent", 0.06)]))
    expect(value(text, `sidecar_stream_first_byte_seconds_count{priority="urgent"}`)).toBe(2)
    expect(value(text, `sidecar_stream_first_byte_seconds_sum{priority="urgent"}`)).toBeCloseTo(0.1)
    expect(value(text, `sidecar_stream_first_byte_seconds_bucket{le="0.05",priority="urgent"}`)).toBe(1)
    expect(value(text, `sidecar_request_duration_seconds_count{priority="urgent"}`)).toBe(0)
  })

  it("adds reported token usage by type, ignoring counts that are not counts", async () => {
    const text = await rendered((m) =>
      Effect.all([m.tokensUsed(12, 34), m.tokensUsed(8, 0), m.tokensUsed(-5, Number.NaN), m.tokensUsed(Number.POSITIVE_INFINITY, 1)]))
    expect(value(text, `sidecar_usage_tokens_total{type="prompt"}`)).toBe(20)
    expect(value(text, `sidecar_usage_tokens_total{type="completion"}`)).toBe(35)
  })

  it("counts the first event of a zero-initialised series as one", async () => {
    const text = await rendered((m) => Effect.all([m.requestCompleted("low", 499), m.upstreamAnswered("primary", 503, 0.1), m.requestCompleted("low", 418)]))
    expect(value(text, `sidecar_requests_total{priority="low",status="499"}`)).toBe(1)
    expect(value(text, `sidecar_requests_total{priority="low",status="418"}`)).toBe(1)
    expect(value(text, `sidecar_requests_total{priority="high",status="499"}`)).toBe(0)
    expect(value(text, `sidecar_upstream_errors_total{status_code="503",provider="primary"}`)).toBe(1)
  })

  it("reads 0 for the control gauges until they are supplied, then their values (0 for unknown)", async () => {
    const before = await rendered(() => Effect.void)
    for (const name of ["sidecar_configured_rate_rpm", "sidecar_quota_estimate_rpm", "sidecar_queue_max"]) expect(value(before, name), name).toBe(0)
    const after = await rendered(() => Effect.void, { ...gauges, configuredRpm: 40, quotaEstimateRpm: 36.5, queueMax: 500 })
    expect(value(after, "sidecar_configured_rate_rpm")).toBe(40)
    expect(value(after, "sidecar_quota_estimate_rpm")).toBe(36.5)
    expect(value(after, "sidecar_queue_max")).toBe(500)
    expect(value(after, "sidecar_effective_rate_rpm")).toBe(30)
    expect(value(after, "sidecar_retreat_state")).toBe(1)
    const unknown = await rendered(() => Effect.void, { ...gauges, quotaEstimateRpm: Number.NaN })
    expect(value(unknown, "sidecar_quota_estimate_rpm")).toBe(0)
  })

  it.skipIf(!promtool)("renders an exposition promtool accepts with every new series in use", async () => {
    const text = await rendered((m) =>
      Effect.all([m.requestDuration("normal", 1), m.streamFirstByte("normal", 0.3), m.tokensUsed(3, 4)]), { ...gauges, configuredRpm: 40, quotaEstimateRpm: 0, queueMax: 10 })
    const check = promtoolCheck(text)
    expect(check.complaints).toEqual([])
    expect(check.status).toBe(0)
  })
})
