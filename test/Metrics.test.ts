import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { metricValue as value, until } from "./support/Observe.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"
import { hasCommand, runTool } from "./support/Tool.js"

let upstream: MockUpstream
let sidecar: RunningSidecar
beforeAll(async () => {
  upstream = await MockUpstream.start()
  upstream.handler = (req, res) => json(res, req.json?.model === "nvidia/throttled" ? 429 : 200, { ok: true })
  // 60 RPM, burst 2, no internal retries: a backlog forms and 429s reach the client.
  sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 60, bucketCapacity: 2, maxRetries: 0 })
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
  request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "x-priority": priority }, body: JSON.stringify({ model }) }).then((r) => r.body.text())

describe("Prometheus metrics", () => {
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
      sidecar_upstream_429_rate: "gauge"
    }
    for (const [name, type] of Object.entries(types)) expect(text, name).toContain(`# TYPE ${name} ${type}`)
    expect(text).toContain("process_cpu_seconds_total")
    expect(text).toContain("nodejs_eventloop_lag_seconds")
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

  it.skipIf(!hasCommand("promtool"))("passes promtool check metrics", async () => {
    const text = await scrape()
    // promtool prints one "<metric> <problem>" line per lint problem (exit 3) and "error ..." on a
    // parse failure (exit 1); any other line is about the machine, not the metrics.
    const families = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]))
    const check = runTool("promtool", ["check", "metrics"], { input: text, about: (line) => families.has(line.split(" ")[0]) })
    expect(families.size).toBeGreaterThan(10)
    expect(check.complaints).toEqual([])
    expect(check.status, check.stderr).toBe(0)
  })
})
