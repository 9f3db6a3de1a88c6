import { Duration } from "effect"
import OpenAI from "openai"
import { request } from "undici"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { until, untilQueued } from "./support/Observe.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"

let upstream: MockUpstream
let sidecar: RunningSidecar | undefined

beforeEach(async () => {
  upstream = await MockUpstream.start()
})
afterEach(async () => {
  await sidecar?.close()
  sidecar = undefined
  await upstream.close()
})

const chat = (url: string, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
  request(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) })

describe("the limited path against a real upstream", () => {
  it("runs upstream calls concurrently: 30 requests at 600 RPM with 2 s latency take ~5 s, not 60 s", async () => {
    let concurrent = 0
    let peak = 0
    upstream.handler = (_req, res) => {
      peak = Math.max(peak, ++concurrent)
      setTimeout(() => {
        concurrent--
        json(res, 200, { ok: true })
      }, 2000)
    }
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 600, bucketCapacity: 1 })
    const started = performance.now()
    const statuses = await Promise.all(Array.from({ length: 30 }, () => chat(sidecar!.url, { model: "nvidia/x" }).then(async (r) => (await r.body.text(), r.statusCode))))
    const elapsed = performance.now() - started
    expect(statuses.every((s) => s === 200)).toBe(true)
    // 29 refills at 100 ms each, plus one upstream latency.
    expect(elapsed).toBeGreaterThan(4500)
    expect(elapsed).toBeLessThan(7000)
    expect(peak).toBeGreaterThanOrEqual(15)
  }, 20_000)

  it("retries an upstream 429 inside, after its Retry-After, and the client sees only the 200", async () => {
    let calls = 0
    upstream.handler = (_req, res) => (++calls === 1 ? json(res, 429, { error: { message: "slow" } }, { "retry-after": "1" }) : json(res, 200, { ok: true }))
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 6000, bucketCapacity: 10 })
    const res = await chat(sidecar.url, { model: "nvidia/x" })
    expect(res.statusCode).toBe(200)
    expect(await res.body.json()).toEqual({ ok: true })
    expect(res.headers["x-sidecar-upstream-retries"]).toBe("1")
    expect(upstream.received).toHaveLength(2)
    expect(upstream.received[1]!.at - upstream.received[0]!.at).toBeGreaterThanOrEqual(950)
  })

  it("passes the upstream 429 through once retries are exhausted, with Retry-After", async () => {
    upstream.handler = (_req, res) => json(res, 429, { error: { message: "slow down", type: "rate_limit" } })
    // ADR-009: the learning law would (rightly) hold each retry until its 60 s window slides.
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 6000, bucketCapacity: 10, maxRetries: 2, rateControl: "adr009" })
    const res = await chat(sidecar.url, { model: "nvidia/x" })
    expect(res.statusCode).toBe(429)
    expect(await res.body.json()).toEqual({ error: { message: "slow down", type: "rate_limit" } })
    expect(Number(res.headers["retry-after"])).toBeGreaterThanOrEqual(1)
    expect(res.headers["x-sidecar-upstream-retries"]).toBe("2")
    expect(upstream.received).toHaveLength(3)
    const metrics = await (await request(sidecar.metricsUrl)).body.text()
    expect(metrics).toContain("sidecar_upstream_errors_total{status_code=\"429\",provider=\"primary\"} 3")
  })

  it("pauses dispatch for the Retry-After of a 429 it passes through", async () => {
    let calls = 0
    upstream.handler = (_req, res) => (++calls === 1 ? json(res, 429, { error: { message: "slow" } }, { "retry-after": "1" }) : json(res, 200, { ok: true }))
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 6000, bucketCapacity: 10, maxRetries: 0 })
    expect((await chat(sidecar.url, { model: "nvidia/x" })).statusCode).toBe(429)
    const next = await chat(sidecar.url, { model: "nvidia/x" })
    expect(next.statusCode).toBe(200)
    await next.body.text()
    expect(upstream.received[1]!.at - upstream.received[0]!.at).toBeGreaterThanOrEqual(950)
  })

  it("answers 429 with Retry-After when the queue wait runs out", async () => {
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 1, bucketCapacity: 1, queueTimeout: Duration.millis(300) })
    expect((await chat(sidecar.url, { model: "nvidia/x" })).statusCode).toBe(200)
    const res = await chat(sidecar.url, { model: "nvidia/x" })
    expect(res.statusCode).toBe(429)
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe("rate_limit_exceeded")
    expect(Number(res.headers["retry-after"])).toBeGreaterThanOrEqual(1)
    expect(upstream.received).toHaveLength(1)
  })

  it("lets a queued client that leaves go without a token or an upstream call", async () => {
    // 60 RPM, burst 1: the first request spends the token, the next waits about a second for its own.
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 60, bucketCapacity: 1 })
    await (await chat(sidecar.url, { model: "nvidia/x" })).body.text()
    const controller = new AbortController()
    const gone = request(`${sidecar.url}/v1/chat/completions`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/x", user: "gone" }), signal: controller.signal
    }).catch(() => undefined)
    await untilQueued(sidecar.metricsUrl, "normal", 1)
    controller.abort()
    await gone
    await untilQueued(sidecar.metricsUrl, "normal", 0)
    const next = await chat(sidecar.url, { model: "nvidia/x", user: "stays" })
    expect(next.statusCode).toBe(200)
    await next.body.text()
    const calls = upstream.received.filter((r) => r.url === "/v1/chat/completions")
    expect(calls.map((r) => r.json?.user ?? null)).toEqual([null, "stays"])
    // The token the leaver would have spent went to the next request: one second after the first, not two.
    expect(calls[1]!.at - calls[0]!.at).toBeLessThan(1900)
  })

  it("evicts the newest low request for an urgent one when full under drop_lowest, answering it 503", async () => {
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 1, bucketCapacity: 1, queueMax: 1, queueFullPolicy: "drop_lowest" })
    await (await chat(sidecar.url, { model: "nvidia/x" })).body.text()
    const low = chat(sidecar.url, { model: "nvidia/x" }, { "x-priority": "low" })
    await untilQueued(sidecar.metricsUrl, "low", 1)
    void chat(sidecar.url, { model: "nvidia/x" }, { "x-priority": "urgent" }).catch(() => undefined)
    const evicted = await low
    expect(evicted.statusCode).toBe(503)
    expect(((await evicted.body.json()) as { error: { code: string } }).error.code).toBe("queue_full")
    const status = (await (await request(`${sidecar.url}/status`)).body.json()) as { queue: { by_priority: Record<string, number>; dropped: number } }
    expect(status.queue.by_priority).toMatchObject({ urgent: 1, low: 0 })
    expect(status.queue.dropped).toBe(1)
  })
})

describe("priority through the openai SDK", () => {
  it("admits 100 concurrent mixed-priority requests in priority order and loses none", async () => {
    const order: Array<string> = []
    upstream.handler = (req, res) => {
      order.push(String(req.json?.user))
      json(res, 200, { id: "c", object: "chat.completion", created: 0, model: "m", choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }] })
    }
    // 1 RPM, burst 1: the first request takes the token and the other 99 queue; then the rate
    // opens to 1200 RPM (one admission every 50 ms), so arrival timing cannot reorder them.
    sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 1, bucketCapacity: 1 })
    const client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "k", maxRetries: 0 })
    const levels = ["low", "normal", "high", "urgent"] as const
    const pending = Promise.all(Array.from({ length: 100 }, (_, i) => {
      const priority = levels[(i * 7) % 4]!
      return client.chat.completions.create(
        { model: "nvidia/x", messages: [{ role: "user", content: "hi" }], user: `${priority}-${i}` },
        { headers: { "X-Priority": priority } }
      )
    }))
    await until(async () => ((await (await request(`${sidecar!.url}/status`)).body.json()) as { queue: { size: number } }).queue.size === 99)
    const opened = await request(`${sidecar.url}/api/admin/config`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ rate_rpm: 1200 }) })
    expect(opened.statusCode).toBe(200)
    await opened.body.text()
    const results = await pending
    expect(results).toHaveLength(100)
    expect(order).toHaveLength(100)
    const rank = { urgent: 0, high: 1, normal: 2, low: 3 } as const
    // The first request may be admitted before the others are queued; after it, strictly by level.
    const ranks = order.slice(1).map((u) => rank[u.split("-")[0] as keyof typeof rank])
    expect(ranks).toEqual([...ranks].sort((a, b) => a - b))
  }, 20_000)
})
