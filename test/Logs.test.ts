// The JSON log as an operator reads it: one line per event that matters, request ids that join
// a client's error to its line, DEBUG admission decisions, drain start and end.
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { until } from "./support/Observe.js"
import { spawnSidecar } from "./support/Process.js"

let upstream: MockUpstream
beforeAll(async () => {
  upstream = await MockUpstream.start()
})
afterAll(async () => {
  await upstream.close()
})

type Line = Record<string, unknown>
const lines = (output: string): Array<Line> =>
  output.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line)

describe("logs and request ids", () => {
  it("logs upstream errors, admission decisions at DEBUG, the drain, and joins a client's error to its line by request id", async () => {
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_LOG_LEVEL: "DEBUG", SIDECAR_MAX_RETRIES: "0" })
    const chat = (headers: Record<string, string> = {}) =>
      request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers, body: JSON.stringify({ model: "nvidia/x" }) })
        .then(async (r) => ({ status: r.statusCode, id: r.headers["x-request-id"], body: await r.body.text() }))
    try {
      upstream.handler = (_req, res) => json(res, 502, { error: "upstream broke" }, { "x-request-id": "nv-123" })
      const failed = await chat({ "x-request-id": "client-abc" })
      expect(failed.status).toBe(502)
      expect(failed.id).toBe("client-abc")
      upstream.handler = (_req, res) => json(res, 200, { choices: [] })
      const generated = await chat()
      expect(generated.id).toMatch(/^[0-9a-f-]{36}$/)
      // The sidecar's own errors and the control routes carry one too.
      const bad = await request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" })
      await bad.body.text()
      expect(bad.statusCode).toBe(400)
      expect(bad.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/)
      const health = await request(`${sidecar.url}/health`, { headers: { "x-request-id": "probe-1" } })
      await health.body.text()
      expect(health.headers["x-request-id"]).toBe("probe-1")
      await until(() => lines(sidecar.output()).filter((l) => l.msg === "request_completed").length === 3)
      sidecar.child.kill("SIGTERM")
      expect((await sidecar.exited).code).toBe(0)
      const log = lines(sidecar.output())
      // The upstream's id is forwarded under its own name, ours went upstream.
      expect(upstream.received[0]?.headers["x-request-id"]).toBe("client-abc")
      const completed = log.filter((l) => l.msg === "request_completed")
      expect(completed.map((l) => l.request_id)).toEqual(expect.arrayContaining(["client-abc", generated.id]))
      expect(log.find((l) => l.msg === "upstream_error")).toMatchObject({ level: "WARN", request_id: "client-abc", status: 502, provider: "primary" })
      expect(JSON.stringify(log.find((l) => l.msg === "upstream_error"))).not.toContain("upstream broke")
      const decisions = log.filter((l) => l.msg === "admission")
      expect(decisions.length).toBeGreaterThanOrEqual(2)
      expect(decisions[0]).toMatchObject({ level: "DEBUG", decision: "immediate", priority: "normal", model: "nvidia/x" })
      expect(log.find((l) => l.msg === "drain_started" && l.server === "proxy")).toMatchObject({ inflight: 0 })
      expect(log.find((l) => l.msg === "drain_finished" && l.server === "proxy")).toMatchObject({ completed: 0, cut_at_deadline: 0 })
      expect(log.find((l) => l.msg === "queue_closed")).toMatchObject({ answered_503: 0 })
    } finally {
      sidecar.child.kill("SIGKILL")
      upstream.received.length = 0
    }
  })

  it("adds no DEBUG lines at INFO", async () => {
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url })
    try {
      await (await request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/x" }) })).body.text()
      await until(() => sidecar.output().includes("request_completed"))
    } finally {
      sidecar.child.kill("SIGTERM")
      await sidecar.exited
      upstream.received.length = 0
    }
    const log = lines(sidecar.output())
    expect(log.some((l) => l.level === "DEBUG")).toBe(false)
    expect(log.some((l) => l.msg === "admission")).toBe(false)
  })
})
