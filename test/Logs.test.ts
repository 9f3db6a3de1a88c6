// The JSON log as an operator reads it: one line per event that matters, request ids that join
// a client's error to its line, DEBUG admission decisions, drain start and end.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
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
      request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify({ model: "nvidia/x" }) })
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

describe("start-up and SIGHUP", () => {
  it("logs the effective configuration (secrets masked) and warns of a misspelt variable", async () => {
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_API_KEY: "nvapi-start-up-secret", SIDECAR_RATE_PRM: "9" })
    try {
      await until(() => sidecar.output().includes("\"listening\""))
    } finally {
      sidecar.child.kill("SIGTERM")
      await sidecar.exited
    }
    const log = lines(sidecar.output())
    const starting = log.find((l) => l.msg === "starting") as { config: Record<string, unknown> } | undefined
    expect(starting?.config).toMatchObject({ SIDECAR_RATE_RPM: 40, SIDECAR_API_KEY: "(set)", SIDECAR_ADMIN_TOKEN: null, SIDECAR_TIMEOUT: 300 })
    expect(log.find((l) => l.msg === "unknown_setting")).toMatchObject({ level: "WARN", variable: "SIDECAR_RATE_PRM" })
    expect(String(log.find((l) => l.msg === "unknown_setting")?.detail)).toContain("did you mean SIDECAR_RATE_RPM?")
    expect(sidecar.output()).not.toContain("nvapi-start-up-secret")
  })

  it("reloads hot settings from the config file on SIGHUP, and refuses a bad file while running on", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sidecar-hup-"))
    const file = join(dir, "sidecar.yaml")
    writeFileSync(file, "rate_rpm: 40\nqueue_max: 50\n")
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url }, ["--config", file])
    const admin = async () => (await (await request(`${sidecar.url}/api/admin/config`)).body.json()) as { rate_rpm: number; queue_max_size: number }
    try {
      writeFileSync(file, "rate_rpm: 55\nqueue_max: 7\ndrain_timeout: 9\n")
      sidecar.child.kill("SIGHUP")
      await until(() => sidecar.output().includes("config_reloaded"))
      expect(await admin()).toMatchObject({ rate_rpm: 55, queue_max_size: 7 })
      writeFileSync(file, "rate_rpm: -3\n")
      sidecar.child.kill("SIGHUP")
      await until(() => sidecar.output().includes("config_reload_refused"))
      expect(await admin()).toMatchObject({ rate_rpm: 55 })
      expect((await request(`${sidecar.url}/health`)).statusCode).toBe(200)
    } finally {
      sidecar.child.kill("SIGTERM")
      await sidecar.exited
      rmSync(dir, { recursive: true, force: true })
    }
    const log = lines(sidecar.output())
    expect(log.find((l) => l.msg === "config_reloaded")).toMatchObject({ applied: ["rateRpm", "queueMax"], restart_needed: ["SIDECAR_DRAIN_TIMEOUT"] })
    expect(log.find((l) => l.msg === "config_reload_refused")).toMatchObject({ level: "ERROR", problems: ["SIDECAR_RATE_RPM: expected a number > 0, got \"-3\""] })
  })
})
