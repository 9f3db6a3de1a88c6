// Real sidecar processes (the built CLI) sharing one limit through a redis-server the test starts
// on a free port; a mock upstream counts what arrives.
import { request } from "undici"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { until } from "./support/Observe.js"
import { spawnSidecar, type SidecarProcess } from "./support/Process.js"
import { startRedis, type RedisServer } from "./support/RedisServer.js"

let redis: RedisServer
let upstream: MockUpstream
let running: Array<SidecarProcess> = []

beforeAll(async () => {
  redis = await startRedis()
  upstream = await MockUpstream.start()
  upstream.handler = (_req, res) => json(res, 200, { ok: true })
})
afterEach(async () => {
  await Promise.all(running.map(async (p) => {
    p.child.kill("SIGTERM")
    await p.exited
  }))
  running = []
})
afterAll(async () => {
  await upstream.close()
  await redis.stop()
})

const start = async (env: Record<string, string>) => {
  const p = await spawnSidecar({
    SIDECAR_UPSTREAM: upstream.url,
    SIDECAR_API_KEY: "nvapi-shared-test",
    SIDECAR_REDIS_URL: redis.url,
    SIDECAR_DRAIN_TIMEOUT: "1",
    ...env
  })
  running.push(p)
  return p
}

const chat = async (p: SidecarProcess, priority = "normal") => {
  const res = await request(`${p.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", "x-priority": priority }, body: JSON.stringify({ model: "nvidia/x" }) })
  await res.body.text()
  return res
}

interface Backend {
  readonly kind: string
  readonly state: string
  readonly replicas: number
  readonly healthy: boolean
}
const backend = async (p: SidecarProcess): Promise<Backend> => {
  const res = await request(`${p.url}/status`)
  const body = (await res.body.json()) as { limiter: { backend: Backend } }
  return body.limiter.backend
}
const metrics = async (p: SidecarProcess) => (await request(`http://127.0.0.1:${p.metricsPort}/metrics`)).body.text()

// /status may fail while a sidecar starts or stops: such a look counts as "not yet".
const eventually = (check: () => Promise<boolean>, withinMs: number) => until(() => check().catch(() => false), withinMs)

describe("replicas sharing a limit", () => {
  it("three sidecars together send no more than the one shared rate, and show the replicas", async () => {
    const env = { SIDECAR_RATE_RPM: "120", SIDECAR_BUCKET_CAPACITY: "2", SIDECAR_LIMIT_KEY: "integration-rate" }
    const sidecars = await Promise.all([start(env), start(env), start(env)])
    await eventually(async () => (await backend(sidecars[0]!)).replicas === 3, 5000)
    const before = upstream.received.length
    const started = performance.now()
    const statuses = await Promise.all(sidecars.flatMap((p) => Array.from({ length: 4 }, () => chat(p).then((r) => r.statusCode))))
    expect(statuses.every((s) => s === 200)).toBe(true)
    const arrivals = upstream.received.slice(before).map((r) => r.at - started)
    expect(arrivals).toHaveLength(12)
    // 2 at once, then one per 500 ms for all three together (each alone would go 3x faster).
    arrivals.forEach((at, i) => expect(at, `arrival ${i}`).toBeGreaterThanOrEqual((i - 2) * 500 - 60))
    expect(arrivals[11]).toBeLessThan(10 * 500 + 1500)

    const status = await backend(sidecars[1]!)
    expect(status).toMatchObject({ kind: "redis", state: "shared", replicas: 3, healthy: true })
    const text = await metrics(sidecars[2]!)
    expect(text).toContain('sidecar_limit_backend_state{state="shared"} 1')
    expect(text).toContain("sidecar_limit_replicas 3")
    expect(text).toContain('sidecar_limit_backend_switches_total{to="local_fallback"} 0')
  }, 30_000)

  it("an urgent request on one sidecar passes the low traffic two others keep sending", async () => {
    // 120 rpm: a token every 500 ms, no burst; low requests wait at the head rather than time out.
    // The low senders' queues are full (size 0), so each low request waits for its own token: 20 waiters against one.
    const env = { SIDECAR_RATE_RPM: "120", SIDECAR_BUCKET_CAPACITY: "1", SIDECAR_LIMIT_KEY: "integration-priority", SIDECAR_LOW_TIMEOUT: "60" }
    const flood = { ...env, SIDECAR_QUEUE_MAX: "0" }
    const [a, b, c] = await Promise.all([start(flood), start(flood), start(env)])
    await eventually(async () => (await backend(a!)).replicas === 3, 5000)
    const before = upstream.received.length
    const lows = [a!, b!].flatMap((p) => Array.from({ length: 10 }, () => chat(p, "low").then((r) => r.statusCode, () => 0)))
    // The low traffic is flowing: it has taken tokens, and the rest of it waits for more.
    await until(() => upstream.received.length >= before + 2, 5000)
    for (let i = 0; i < 4; i++) {
      const asked = performance.now()
      expect((await chat(c!, "urgent")).statusCode).toBe(200)
      // One token interval, plus slack for three processes on a busy machine.
      expect(performance.now() - asked).toBeLessThan(1200)
    }
    void Promise.all(lows) // answered as the sidecars drain
  }, 30_000)

  it("Redis lost and back: local keeps serving at its share, closed answers 503 with Retry-After, both shared again within 5 s", async () => {
    const common = { SIDECAR_RATE_RPM: "600", SIDECAR_BUCKET_CAPACITY: "10", SIDECAR_LIMIT_KEY: "integration-failure" }
    const [local, closed] = await Promise.all([start({ ...common, SIDECAR_REDIS_FAILURE: "local" }), start({ ...common, SIDECAR_REDIS_FAILURE: "closed" })])
    await eventually(async () => (await backend(local!)).replicas === 2, 5000)

    await redis.stop()
    try {
      expect((await chat(local!)).statusCode).toBe(200)
      const refused = await chat(closed!)
      expect(refused.statusCode).toBe(503)
      expect(Number(refused.headers["retry-after"])).toBeGreaterThanOrEqual(1)
      expect(Number(refused.headers["retry-after-ms"])).toBeGreaterThanOrEqual(1000)
      // /status is cached for a second.
      await eventually(async () => (await backend(local!)).state === "local_fallback" && (await backend(closed!)).state === "closed", 2000)
      expect(await backend(local!)).toMatchObject({ healthy: false })
      expect(await metrics(local!)).toContain('sidecar_limit_backend_switches_total{to="local_fallback"} 1')
      expect(await metrics(closed!)).toContain('sidecar_limit_backend_state{state="closed"} 1')
      expect(local!.output()).toMatch(/"level":"WARN[^}]*limit_backend_switched|limit_backend_switched[^}]*"level":"WARN/)
    } finally {
      await redis.restart()
    }
    const back = await eventually(async () => (await backend(local!)).state === "shared" && (await backend(closed!)).state === "shared", 5000)
    expect(back).toBeLessThan(5000)
    expect((await chat(closed!)).statusCode).toBe(200)

    // A hung Redis: the request waits the command timeout at most, then the fallback decides.
    redis.pause()
    try {
      const asked = performance.now()
      const [viaLocal, viaClosed] = await Promise.all([chat(local!), chat(closed!)])
      expect(performance.now() - asked).toBeLessThan(2000)
      expect(viaLocal.statusCode).toBe(200)
      expect(viaClosed.statusCode).toBe(503)
      // Nor does it hold up shutdown.
      const stopping = performance.now()
      closed!.child.kill("SIGTERM")
      await closed!.exited
      expect(performance.now() - stopping).toBeLessThan(3000)
    } finally {
      redis.resume()
    }
    await eventually(async () => (await backend(local!)).state === "shared", 5000)
  }, 40_000)
})
