import { Option, Redacted } from "effect"
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { isLoopback } from "../src/Control/Admin.js"
import { MockUpstream } from "./support/MockUpstream.js"
import { until, untilQueued } from "./support/Observe.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"

let upstream: MockUpstream
let secured: RunningSidecar
let open: RunningSidecar
const token = "s3cret-admin-token"

beforeAll(async () => {
  upstream = await MockUpstream.start()
  secured = await startSidecar({ upstream: upstream.url, adminToken: Option.some(Redacted.make(token)), apiKey: Option.some(Redacted.make("nvapi-abcdefgh-1234")), rateRpm: 1, bucketCapacity: 1, queueMax: 5 })
  open = await startSidecar({ upstream: upstream.url })
})
afterAll(async () => {
  await secured.close()
  await open.close()
  await upstream.close()
})

const post = (base: string, body: unknown, headers: Record<string, string> = {}) =>
  request(`${base}/api/admin/config`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) })
    .then(async (r) => ({ status: r.statusCode, body: (await r.body.json()) as Record<string, unknown> & { error?: { code: string; message: string } } }))
const get = (base: string, path: string, headers: Record<string, string> = {}) =>
  request(`${base}${path}`, { headers }).then(async (r) => ({ status: r.statusCode, body: (await r.body.json()) as Record<string, never> }))

describe("admin API", () => {
  it("masks credentials in upstream URLs it shows", async () => {
    const withCreds = await startSidecar({ upstream: "http://user:nvapi-in-url-secret@127.0.0.1:9/v1", passthroughUpstream: Option.some("http://u:pw-passthrough@127.0.0.1:9/v1") })
    try {
      const { body } = await get(withCreds.url, "/api/admin/config")
      expect(body).toMatchObject({ upstream: "http://****@127.0.0.1:9/v1", passthrough_upstream: "http://****@127.0.0.1:9/v1" })
      expect(JSON.stringify(body)).not.toMatch(/nvapi-in-url-secret|pw-passthrough/)
    } finally {
      await withCreds.close()
    }
  })

  it("disables admin writes when it listens beyond loopback without a token", async () => {
    const exposed = await startSidecar({ upstream: upstream.url, host: "0.0.0.0" })
    try {
      const res = await post(exposed.url, { rate_rpm: 7 })
      expect(res.status).toBe(403)
      expect(res.body.error?.message).toContain("Admin writes are disabled")
      expect((await get(exposed.url, "/api/admin/config")).body).toMatchObject({ admin_writes: "disabled", rate_rpm: 40 })
    } finally {
      await exposed.close()
    }
  })

  it("reads the config with the API key masked, and only with the token when one is set", async () => {
    expect((await get(secured.url, "/api/admin/config")).status).toBe(401)
    expect((await get(secured.url, "/api/admin/config", { authorization: "Bearer nope" })).status).toBe(403)
    const { status, body } = await get(secured.url, "/api/admin/config", { authorization: `Bearer ${token}` })
    expect(status).toBe(200)
    expect(body).toMatchObject({ rate_rpm: 1, bucket_capacity: 1, queue_max_size: 5, queue_full_policy: "passthrough", low_priority_timeout: 2, api_key: "****1234", admin_token_set: true })
    expect(JSON.stringify(body)).not.toContain("abcdefgh")
    expect(JSON.stringify(body)).not.toContain(token)
  })

  it("requires the bearer token when one is set: missing 401, wrong 403 (any length), right 200", async () => {
    expect((await post(secured.url, { rate_rpm: 2 })).status).toBe(401)
    expect((await post(secured.url, { rate_rpm: 2 }, { authorization: "Bearer nope" })).status).toBe(403)
    expect((await post(secured.url, { rate_rpm: 2 }, { authorization: `Bearer ${token}x` })).status).toBe(403)
    expect((await post(secured.url, { rate_rpm: 2 }, { authorization: `Bearer ${"y".repeat(4096)}` })).status).toBe(403)
    expect((await post(secured.url, { rate_rpm: 2 }, { authorization: "Basic abc" })).status).toBe(401)
    const ok = await post(secured.url, { rate_rpm: 2 }, { authorization: `Bearer ${token}` })
    expect(ok.status).toBe(200)
    expect(ok.body.rate_rpm).toBe(2)
  })

  it("refuses a write carrying a foreign Origin, even with the token", async () => {
    const res = await post(secured.url, { rate_rpm: 3 }, { authorization: `Bearer ${token}`, origin: "http://evil.example" })
    expect(res.status).toBe(403)
    expect(res.body.error?.message).toContain("Cross-origin")
    const same = await post(secured.url, { rate_rpm: 3 }, { authorization: `Bearer ${token}`, origin: secured.url })
    expect(same.status).toBe(200)
  })

  it("sends no wildcard CORS header", async () => {
    const res = await request(`${secured.url}/api/admin/config`, { headers: { origin: "http://evil.example" } })
    await res.body.text()
    expect(res.headers["access-control-allow-origin"]).toBeUndefined()
  })

  it("accepts writes from loopback peers only when no token is set", async () => {
    expect((await post(open.url, { low_priority_timeout: 3 })).status).toBe(200)
    expect(isLoopback("127.0.0.1")).toBe(true)
    expect(isLoopback("::1")).toBe(true)
    expect(isLoopback("::ffff:127.0.0.5")).toBe(true)
    expect(isLoopback("10.0.0.5")).toBe(false)
    expect(isLoopback("::ffff:192.168.1.2")).toBe(false)
    expect(isLoopback(undefined)).toBe(false)
  })

  it("reads and replaces the per-client limits with the token; a bad member is named", async () => {
    const auth = { authorization: `Bearer ${token}` } // reads need the token too
    expect((await post(secured.url, { clients: { a: { rpm: 5 } } })).status).toBe(401)
    const ok = await post(secured.url, { clients: { default: { max_queued: 3 }, a: { rpm: 5, max_priority: "high" } } }, auth)
    expect(ok.status).toBe(200)
    expect(ok.body.clients).toEqual({ default: { max_queued: 3 }, a: { rpm: 5, max_priority: "high" } })
    expect((await get(secured.url, "/api/admin/config", auth)).body.clients).toEqual({ default: { max_queued: 3 }, a: { rpm: 5, max_priority: "high" } })
    const bad = await post(secured.url, { clients: { a: { max_queued: -1 } } }, auth)
    expect(bad.status).toBe(400)
    expect(bad.body.error?.message).toBe("Invalid value for clients: a.max_queued: expected an integer >= 0, got -1")
    expect((await post(secured.url, { clients: {} }, auth)).body.clients).toEqual({})
  })

  it("validates patches and names the bad field", async () => {
    const auth = { "content-type": "application/json", authorization: `Bearer ${token}` }
    for (const [patch, field] of [
      [{ rate_rpm: -5 }, "rate_rpm"],
      [{ bucket_capacity: 1.5 }, "bucket_capacity"],
      [{ queue_full_policy: "sometimes" }, "queue_full_policy"],
      [{ low_priority_timeout: "2" }, "low_priority_timeout"],
      [{ rate_limit: 5 }, "rate_limit"],
      [{ clients: { a: { rpm: 0 } } }, "clients"]
    ] as const) {
      const res = await post(secured.url, patch, auth)
      expect(res.status, field).toBe(400)
      expect(res.body.error?.code).toBe("invalid_config")
      expect(res.body.error?.message).toContain(field)
    }
    const notJson = await request(`${secured.url}/api/admin/config`, { method: "POST", headers: auth, body: "{" })
    expect(notJson.statusCode).toBe(400)
    await notJson.body.text()
  })

  it("applies a new rate at once: a queued request is released by the higher rate", async () => {
    const auth = { "content-type": "application/json", authorization: `Bearer ${token}` }
    await post(secured.url, { rate_rpm: 1, bucket_capacity: 1 }, auth)
    const first = await request(`${secured.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{\"model\":\"nvidia/x\"}" })
    await first.body.text()
    const started = performance.now()
    const queued = request(`${secured.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{\"model\":\"nvidia/x\"}" })
    await untilQueued(secured.metricsUrl, "normal", 1)
    // Shrinking below the current depth is refused.
    const shrink = await post(secured.url, { queue_max_size: 0 }, auth)
    expect(shrink.status).toBe(400)
    expect(shrink.body.error?.message).toContain("queue_max_size")
    expect((await post(secured.url, { rate_rpm: 6000 }, auth)).status).toBe(200)
    const res = await queued
    await res.body.text()
    expect(res.statusCode).toBe(200)
    expect(performance.now() - started).toBeLessThan(3000)
    // /status is the 1 s cached snapshot: the new base rate shows within a second.
    await until(async () => ((await get(secured.url, "/status")).body as unknown as { retreat: { base_rpm: number } }).retreat.base_rpm === 6000, 3000)
  })
})

describe("dashboard endpoints", () => {
  it("redirects / and /dashboard to the page, served as HTML with no external resources", async () => {
    for (const path of ["/", "/dashboard"]) {
      const res = await request(`${open.url}${path}`)
      expect(res.statusCode).toBe(302)
      expect(res.headers.location).toBe("/api/dashboard")
      await res.body.text()
    }
    const page = await request(`${open.url}/api/dashboard`)
    expect(page.headers["content-type"]).toContain("text/html")
    const html = await page.body.text()
    expect(html).toContain("/api/dashboard/stream")
    expect(html).not.toMatch(/(src|href)=["']https?:\/\//)
  })

  it("streams SSE: retry first, then one JSON snapshot per second, and stops when the client leaves", async () => {
    const controller = new AbortController()
    const res = await request(`${open.url}/api/dashboard/stream`, { signal: controller.signal })
    expect(res.headers["content-type"]).toBe("text/event-stream")
    const started = performance.now()
    let text = ""
    for await (const chunk of res.body) {
      text += chunk.toString()
      if ((text.match(/^data: /gm) ?? []).length >= 3) break
    }
    const elapsed = performance.now() - started
    controller.abort()
    expect(text.startsWith("retry: 3000\n\n")).toBe(true)
    const frames = text.split("\n\n").filter((f) => f.startsWith("data: "))
    const snapshot = JSON.parse(frames[0]!.slice(6)) as { queue: { by_priority: Record<string, number> }; retreat: { state: string }; token_bucket: { capacity: number } }
    expect(Object.keys(snapshot.queue.by_priority)).toEqual(["urgent", "high", "normal", "low"])
    expect(snapshot.retreat.state).toBe("open") // the learning law (default) before any 429
    expect(snapshot.token_bucket.capacity).toBe(40)
    expect(elapsed).toBeGreaterThan(1500)
    expect(elapsed).toBeLessThan(3500)
  })
})
