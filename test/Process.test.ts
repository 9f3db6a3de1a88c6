import { cpSync, mkdtempSync, rmSync, symlinkSync } from "node:fs"
import { connect, createServer, type AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { until } from "./support/Observe.js"
import { root, runCli, spawnSidecar } from "./support/Process.js"

let upstream: MockUpstream
beforeAll(async () => {
  upstream = await MockUpstream.start()
})
afterAll(async () => {
  await upstream.close()
})

describe("the CLI", () => {
  it("prints its version and a help listing every setting", async () => {
    const version = await runCli(["--version"])
    expect(version.code).toBe(0)
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
    const help = await runCli(["--help"])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain("SIDECAR_RATE_RPM")
    expect(help.stdout).toContain("--config FILE")
  })

  it("refuses to start on bad settings with one message naming every bad field, and no secret", async () => {
    const run = await runCli([], { SIDECAR_PORT: "abc", SIDECAR_RATE_RPM: "0", SIDECAR_API_KEY: "nvapi-never-print-me" })
    expect(run.code).toBe(1)
    expect(run.stderr).toContain("Invalid configuration")
    expect(run.stderr).toContain("SIDECAR_PORT")
    expect(run.stderr).toContain("SIDECAR_RATE_RPM")
    expect(run.stderr + run.stdout).not.toContain("nvapi-never-print-me")
    expect(run.stderr).not.toMatch(/at .*\.mjs:\d+/)
  })

  it("says why when start-up fails on a defect (an install without its dashboard page) instead of exiting silently", async () => {
    const copy = mkdtempSync(join(tmpdir(), "sidecar-nostatic-"))
    try {
      for (const part of ["dist", "bin", "package.json"]) cpSync(join(root, part), join(copy, part), { recursive: true })
      symlinkSync(join(root, "node_modules"), join(copy, "node_modules"))
      const run = await runCli([], { SIDECAR_PORT: "0", SIDECAR_METRICS_PORT: "0" }, copy)
      expect(run.code).toBe(1)
      expect(run.stderr).toContain("start-up failed")
      expect(run.stderr).toContain("dashboard.html")
    } finally {
      rmSync(copy, { recursive: true, force: true })
    }
  })

  it("says plainly when its port is taken", async () => {
    const blocker = createServer()
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
    const port = (blocker.address() as AddressInfo).port
    const run = await runCli([], { SIDECAR_PORT: String(port), SIDECAR_METRICS_PORT: "0" })
    blocker.close()
    expect(run.code).toBe(1)
    expect(run.stderr).toContain(`Cannot listen on 127.0.0.1:${port} (proxy server)`)
    expect(run.stderr).toContain("EADDRINUSE")
  })
})

describe("graceful shutdown", () => {
  it("on SIGTERM finishes the in-flight call, answers the queued one 503, and exits 0", async () => {
    upstream.handler = (_req, res) => void setTimeout(() => json(res, 200, { ok: true }), 1500)
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_RATE_RPM: "1", SIDECAR_BUCKET_CAPACITY: "1", SIDECAR_DRAIN_TIMEOUT: "10" })
    const send = () =>
      request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/x" }) })
        .then(async (r) => ({ status: r.statusCode, body: await r.body.text(), retryAfter: r.headers["retry-after"] }))
    const inflight = send()
    await until(() => upstream.received.length === 1)
    const queued = send()
    await until(async () => ((await (await request(`${sidecar.url}/status`)).body.json()) as { queue: { size: number } }).queue.size === 1)
    const signalled = performance.now()
    sidecar.child.kill("SIGTERM")
    const [first, second, exit] = await Promise.all([inflight, queued, sidecar.exited])
    expect(first.status).toBe(200)
    expect(second.status).toBe(503)
    expect(second.retryAfter).toBeDefined()
    expect(second.body).toContain("shutting_down")
    expect(exit.code).toBe(0)
    expect(exit.at - signalled).toBeLessThan(10_000)
    expect(upstream.received).toHaveLength(1)
    upstream.received.length = 0
  })

  it("answers 503 to a late request on a kept-alive connection while draining", async () => {
    upstream.handler = (req, res) => void setTimeout(() => json(res, 200, { ok: true }), req.json?.model === "nvidia/slow" ? 1500 : 300)
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_DRAIN_TIMEOUT: "10" })
    const slow = request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/slow" }) }).then((r) => r.statusCode)
    const socket = connect(sidecar.port, "127.0.0.1")
    let received = ""
    socket.on("data", (d: Buffer) => (received += d.toString()))
    const body = JSON.stringify({ model: "nvidia/fast" })
    socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    await until(() => upstream.received.length === 2)
    sidecar.child.kill("SIGTERM")
    await until(() => received.includes("{\"ok\":true}"))
    expect(received).toMatch(/^HTTP\/1.1 200/)
    received = ""
    socket.write("GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await until(() => received.includes("shutting_down"))
    expect(received).toMatch(/^HTTP\/1.1 503/)
    expect(received.toLowerCase()).toContain("connection: close")
    expect(await slow).toBe(200)
    expect((await sidecar.exited).code).toBe(0)
    socket.destroy()
    upstream.received.length = 0
  })

  it("does not let a hung upstream keep the process alive past the drain timeout", async () => {
    upstream.handler = () => new Promise(() => {})
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_DRAIN_TIMEOUT: "1" })
    const hung = request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/x" }) }).catch(() => "cut")
    await until(() => upstream.received.length === 1)
    const signalled = performance.now()
    sidecar.child.kill("SIGTERM")
    const exit = await sidecar.exited
    expect(exit.code).toBe(0)
    expect(exit.at - signalled).toBeGreaterThanOrEqual(900)
    expect(exit.at - signalled).toBeLessThan(4000)
    expect(await hung).toBe("cut")
    upstream.received.length = 0
  })
})

describe("secrets", () => {
  it("never writes the API key or the admin token to the logs, even at DEBUG", async () => {
    const key = "nvapi-FAKE-KEY-0123456789"
    const token = "admin-FAKE-TOKEN-9876"
    upstream.handler = (req, res) => json(res, req.json?.model === "nvidia/limited" ? 429 : 200, { echoed: req.headers.authorization })
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_API_KEY: key, SIDECAR_ADMIN_TOKEN: token, SIDECAR_LOG_LEVEL: "DEBUG", SIDECAR_MAX_RETRIES: "0" })
    try {
      const calls = [
        request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/x" }) }),
        request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/limited" }) }),
        request(`${sidecar.url}/api/admin/config`, { headers: { authorization: `Bearer ${token}` } }),
        request(`${sidecar.url}/api/admin/config`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ rate_rpm: 50 }) }),
        request(`${sidecar.url}/api/admin/config`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer wrong" }, body: JSON.stringify({ rate_rpm: 50 }) }),
        request(`${sidecar.url}/status`)
      ]
      const bodies = await Promise.all(calls.map(async (c) => (await c).body.text()))
      expect(bodies[2]).not.toContain(key)
      expect(bodies[2]).toContain("****6789")
      for (const body of bodies.slice(2)) expect(body).not.toContain(token)
    } finally {
      sidecar.child.kill("SIGTERM")
      await sidecar.exited
    }
    const lines = sidecar.output().trim().split("\n")
    expect(lines.length).toBeGreaterThan(3)
    for (const line of lines) {
      expect(() => JSON.parse(line), line).not.toThrow()
      expect(line).not.toContain(key)
      expect(line).not.toContain(token)
    }
    expect(lines.some((l) => l.includes("request_completed"))).toBe(true)
    expect(lines.some((l) => l.includes("admin_config_changed"))).toBe(true)
  })
})
