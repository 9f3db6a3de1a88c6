// The shared limit against a real redis-server started by the test on a free port: replicas are
// separate limiter instances (each its own ioredis client, scope and fallback bucket).
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Context, Effect, Either, Exit, Layer, Logger, LogLevel, Option, Scope } from "effect"
import { Redis } from "ioredis"
import { Adr009 } from "../src/Admission/Laws/Adr009.js"
import { Learning } from "../src/Admission/Laws/Learning.js"
import { SendWindow } from "../src/Admission/Laws/SendWindow.js"
import { RateLimiter } from "../src/Admission/RateLimiter.js"
import { LawLeader } from "../src/Admission/Shared/LawLeader.js"
import { redisKeys } from "../src/Admission/Shared/LimitKeys.js"
import * as SharedRateLimiter from "../src/Admission/Shared/SharedRateLimiter.js"
import type { Priority } from "../src/Common/Priority.js"
import { SidecarConfig, type SidecarConfigShape } from "../src/Config/SidecarConfig.js"
import { Metrics } from "../src/Observability/Metrics.js"
import { until } from "./support/Observe.js"
import { startRedis, type RedisServer } from "./support/RedisServer.js"

type Limiter = Context.Tag.Service<typeof RateLimiter>

let redis: RedisServer
let keySeq = 0
const scopes: Array<Scope.CloseableScope> = []
const scopeOf = new Map<Limiter, Scope.CloseableScope>()

beforeAll(async () => {
  redis = await startRedis()
})

afterAll(async () => {
  await Promise.all(scopes.map((s) => Effect.runPromise(Scope.close(s, Exit.void))))
  await redis.stop()
})

/** The limit key of the last `replicas` call. */
const lastKey = () => `test-${process.pid}-${keySeq}`

/** `n` replicas of one fresh limit key. */
const replicas = async (n: number, overrides: Partial<SidecarConfigShape> = {}, url = redis.url): Promise<Array<Limiter>> => {
  const limitKey = `test-${process.pid}-${++keySeq}`
  const made: Array<Limiter> = []
  for (let i = 0; i < n; i++) {
    const scope = Effect.runSync(Scope.make())
    scopes.push(scope)
    const layer = SharedRateLimiter.layer(url).pipe(
      Layer.provide(Metrics.layer),
      Layer.provide(SidecarConfig.layerTest({ limitKey: Option.some(limitKey), ...overrides })),
      Layer.provide(Logger.minimumLogLevel(LogLevel.None))
    )
    const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
    const limiter = Context.get(context, RateLimiter)
    scopeOf.set(limiter, scope)
    made.push(limiter)
  }
  return made
}

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.provide(effect, Logger.minimumLogLevel(LogLevel.None)))

const backendState = async (limiter: Limiter) => (await run(limiter.snapshot)).backend.state

describe("control laws save and restore their state", () => {
  it("learning: a new leader continues at the learned level", () => {
    const law = new Learning(100)
    for (let t = 0; t < 50; t++) law.dispatched(1000 + t * 100)
    law.record("throttled", 7000, undefined, 6000)
    expect(law.mode).toBe("hold")
    const next = new Learning(100)
    next.restore(law.save())
    expect(next.mode).toBe("hold")
    expect(next.effectiveRpm).toBe(law.effectiveRpm)
    expect(next.estimate).toBe(law.estimate)
    expect(next.view(8000)).toEqual(law.view(8000))
    expect(next.dispatchAt(8000)).toBe(law.dispatchAt(8000))
    expect(next.save()).toBe(law.save())
  })

  it("adr009: a retreat survives the change of leader; another law's state is ignored", () => {
    const law = new Adr009(100)
    for (let i = 0; i < 20; i++) law.record(i % 2 === 0 ? "throttled" : "ok", 1000 + i * 100)
    law.evaluate(5000)
    expect(law.mode).toBe("retreat")
    const next = new Adr009(100)
    next.restore(law.save())
    expect(next.mode).toBe("retreat")
    expect(next.effectiveRpm).toBe(75)
    expect(next.view(6000)).toEqual(law.view(6000))
    next.restore(new Learning(100).save())
    expect(next.effectiveRpm).toBe(75)
  })
})

describe("the leader's law", () => {
  it("learns from every replica's evidence and publishes the rate, burst, count and hold", () => {
    const leader = new LawLeader(new Learning(600), 600, 50)
    const opened = leader.step(1000).params
    expect(opened).toMatchObject({ rpm: "600", capacity: "50", burst: "50", windowCap: "600", law: "learning", mode: "open" })
    leader.feed([...Array.from({ length: 30 }, (_, i) => `d:${2000 + i * 10}`), "th:2290:2400:", "garbage", "ok:x:y"])
    const held = leader.step(2500)
    expect(held.params).toMatchObject({ mode: "hold", burst: "1" })
    expect(Number(held.params["rpm"])).toBeLessThanOrEqual(30)
    expect(held.params["windowCap"]).toBe(String(Math.floor(Number(held.params["rpm"]))))
    // The 429 acts at once; the change of mode is reported by the next evaluation, one step later.
    expect(held.change).toBeUndefined()
    expect(leader.step(6000).change).toMatchObject({ from: "open", to: "hold" })
    // A new leader restores the saved state; an admin change published by any replica rebases it.
    const next = new LawLeader(new Learning(600), 600, 50)
    next.restore(held.state)
    expect(next.step(2600).params["rpm"]).toBe(held.params["rpm"])
    next.configure(20, 10, 2700)
    expect(next.step(2800).params).toMatchObject({ rpm: "20", capacity: "10", baseRpm: "20" })
  })
})

describe("evidence reported late", () => {
  it("a send window counts a late send still in its window and ignores one older than it", () => {
    const window = new SendWindow(60_250)
    window.add(100_000)
    expect(window.count(100_000)).toBe(1)
    // 30 s late, out of order: still in the window.
    window.add(70_000)
    expect(window.count(100_000)).toBe(2)
    expect(window.countWithin(100_000, 60_000)).toBe(2)
    // 61 s and 70 s late: out of the window (and of the ring: it must not take a newer slot's place).
    window.add(39_000)
    window.add(30_000)
    expect(window.count(100_000)).toBe(2)
    expect(window.countWithin(100_000, 60_000)).toBe(2)
    // The late one leaves the window when its time comes.
    expect(window.count(130_400)).toBe(1)
  })

  it("the leader feeds a drained batch in time order: a 429 counts every send before it, whenever it was reported", () => {
    const leader = new LawLeader(new Learning(600), 600, 50)
    leader.step(1000)
    // Sends made while Redis was away arrive after the 429 they preceded.
    const outage = Array.from({ length: 40 }, (_, i) => `d:${2000 + i * 100}`)
    leader.feed(["d:6100", "th:6100:6400:", ...outage])
    const held = leader.step(7000).params
    expect(held["mode"]).toBe("hold")
    // 41 sent, the refused one not counted.
    expect(Number(held["rpm"])).toBe(40)
    // Evidence older than the law's windows is ignored, not counted in a newer slot.
    leader.feed(Array.from({ length: 10 }, (_, i) => `d:${i}`))
    expect(Number(leader.step(7000).params["windowCap"])).toBe(40)
  })

  it("with nothing saved, the last leader keeps its law; one that has led since makes a fresh one", () => {
    const learned = new LawLeader(new Learning(600), 600, 50, (rpm) => new Learning(rpm))
    learned.feed([...Array.from({ length: 30 }, (_, i) => `d:${1000 + i * 10}`), "th:1290:1400:"])
    const level = learned.step(2000).params["rpm"]
    expect(Number(level)).toBeLessThan(600)
    learned.restore(null, 3000)
    expect(learned.step(3000).params["rpm"]).toBe(level)
    learned.resign()
    learned.restore(null, 4000)
    expect(learned.step(4000).params).toMatchObject({ rpm: "600", mode: "open" })
  })
})

describe("shared bucket on Redis", () => {
  it("no two replicas spend the same token: 3 replicas hammering get at most capacity + rate x elapsed", async () => {
    const [a, b, c] = await replicas(3, { rateRpm: 600, bucketCapacity: 5, rateControl: "adr009" })
    const started = Date.now()
    let granted = 0
    const hammer = async (limiter: Limiter) => {
      while (Date.now() - started < 1500) {
        const batch = await Promise.all(Array.from({ length: 8 }, () => run(limiter.tryTake("normal"))))
        granted += batch.filter(Boolean).length
      }
    }
    await Promise.all([a!, b!, c!].map(hammer))
    const elapsed = Date.now() - started
    // 600 rpm = 10 per second, from Redis time: the bucket's 5, then one per 100 ms.
    expect(granted).toBeLessThanOrEqual(5 + Math.ceil((elapsed * 10) / 1000) + 1)
    expect(granted).toBeGreaterThanOrEqual(5 + Math.floor((1400 * 10) / 1000) - 2)
  })

  it("an urgent request on one replica waits at most about one token interval, whatever low traffic the others send", async () => {
    // 120 rpm: one token every 500 ms, no burst.
    const [a, b, c] = await replicas(3, { rateRpm: 120, bucketCapacity: 1, rateControl: "adr009" })
    let stop = false
    let lows = 0
    const lowTraffic = async (limiter: Limiter) => {
      while (!stop) {
        await run(limiter.take("low"))
        lows++
      }
    }
    const senders = [a!, a!, a!, b!, b!, b!].map(lowTraffic)
    await until(() => lows >= 2, 5000)
    const waits: Array<number> = []
    for (let i = 0; i < 3; i++) {
      const asked = Date.now()
      await run(c!.take("urgent"))
      waits.push(Date.now() - asked)
      // The next urgent request asks against low traffic that is taking tokens again.
      const lowsBefore = lows
      await until(() => lows > lowsBefore, 5000)
    }
    stop = true
    void Promise.all(senders) // they end with their next tokens
    expect(lows).toBeGreaterThan(0)
    // One token interval (500 ms) plus slack for a busy machine; without claims it waited ~24 s.
    for (const wait of waits) expect(wait).toBeLessThan(1000)
  })

  it("a 429 seen by one replica lowers the rate every replica uses within one step (learning law)", async () => {
    const [a, b] = await replicas(2, { rateRpm: 600, bucketCapacity: 10, rateControl: "learning" })
    for (let i = 0; i < 20; i++) await run(a!.tryTake("normal"))
    const sentAt = await run(a!.dispatched)
    await run(a!.record("throttled", sentAt))
    const took = await until(async () => (await run(b!.snapshot)).effectiveRpm < 600, 5000)
    const seen = await run(b!.snapshot)
    expect(seen.mode).toBe("hold")
    expect(seen.effectiveRpm).toBeLessThanOrEqual(20)
    expect(took).toBeLessThan(5000)
  })

  it("the learned count holds for all replicas together: at most `level` sends in any 60.25 s", async () => {
    const [a, b] = await replicas(2, { rateRpm: 600, bucketCapacity: 50, rateControl: "learning" })
    for (let i = 0; i < 10; i++) expect(await run(a!.tryTake("normal"))).toBe(true)
    await run(a!.record("throttled", await run(a!.dispatched)))
    await until(async () => (await run(b!.snapshot)).effectiveRpm <= 10, 3000)
    // The window already holds the 10 sends A made: B may send nothing until they leave it.
    for (let i = 0; i < 5; i++) expect(await run(b!.tryTake("urgent"))).toBe(false)
    expect((await run(b!.snapshot)).pausedForMs).toBeGreaterThan(50_000)
  })

  it("an upstream Retry-After on one replica pauses every replica", async () => {
    const [a, b] = await replicas(2, { rateRpm: 600, bucketCapacity: 50, rateControl: "adr009" })
    expect(await run(b!.tryTake("urgent"))).toBe(true)
    await run(a!.pauseFor(1500))
    const paused = Date.now()
    expect(await run(b!.tryTake("urgent"))).toBe(false)
    await until(() => run(b!.tryTake("urgent")), 3000)
    expect(Date.now() - paused).toBeGreaterThanOrEqual(1300)
  })

  it("a 429 seen by one replica retreats every replica at the next evaluation (adr009)", async () => {
    const [a, b] = await replicas(2, { rateRpm: 600, bucketCapacity: 10, rateControl: "adr009" })
    for (let i = 0; i < 5; i++) {
      const sentAt = await run(a!.dispatched)
      await run(a!.record(i === 0 ? "throttled" : "ok", sentAt))
    }
    await until(async () => (await run(b!.snapshot)).mode === "retreat", 6000)
    expect((await run(b!.snapshot)).effectiveRpm).toBe(450)
  })

  it("a new leader continues with the learned rate when the old one leaves", async () => {
    const [a, b] = await replicas(2, { rateRpm: 600, bucketCapacity: 50, rateControl: "learning" })
    for (let i = 0; i < 12; i++) await run(a!.tryTake("normal"))
    await run(a!.record("throttled", await run(a!.dispatched)))
    await until(async () => (await run(b!.snapshot)).effectiveRpm <= 12, 3000)
    const leader = (await run(a!.snapshot)).backend.leader ? a! : b!
    const survivor = leader === a ? b! : a!
    await Effect.runPromise(Scope.close(scopeOf.get(leader)!, Exit.void))
    const params = new Redis(redis.url)
    const publishedAt = async () => Number(await params.hget(redisKeys(lastKey()).params, "publishedAt"))
    const publishedBefore = await publishedAt()
    await until(async () => (await run(survivor.snapshot)).backend.leader, 4000)
    // Published by the new leader from the saved state, not a fresh law at the configured 600.
    // Two publishes: a sync reads the params before its leader publishes, so by the second the
    // survivor's view holds the first.
    await until(async () => (await publishedAt()) > publishedBefore, 4000)
    const firstPublish = await publishedAt()
    await until(async () => (await publishedAt()) > firstPublish, 4000)
    params.disconnect()
    const seen = await run(survivor.snapshot)
    expect(seen.effectiveRpm).toBeLessThanOrEqual(12)
    expect(seen.mode).toBe("hold")
    expect(seen.backend.replicas).toBe(1)
  })

  it("an admin change of the rate on one replica applies to the shared limit", async () => {
    const [a, b] = await replicas(2, { rateRpm: 600, bucketCapacity: 50, rateControl: "adr009" })
    await run(a!.configure({ rateRpm: 30, capacity: 5 }))
    await until(async () => {
      const s = await run(b!.snapshot)
      return s.baseRpm === 30 && s.effectiveRpm === 30 && s.capacity === 5
    }, 3000)
  })

  it("registers replicas with a heartbeat and shows them", async () => {
    const [a, b, c] = await replicas(3, { rateRpm: 60, bucketCapacity: 1 })
    await until(async () => (await run(a!.snapshot)).backend.replicas === 3, 3000)
    const view = (await run(c!.snapshot)).backend
    expect(view).toMatchObject({ kind: "redis", state: "shared", healthy: true, failureMode: "local" })
    const leaders = (await Promise.all([a!, b!, c!].map((l) => run(l.snapshot)))).filter((s) => s.backend.leader)
    expect(leaders).toHaveLength(1)
  })
})

describe("when Redis is unreachable", () => {
  it("local: each replica keeps limiting at its share, and returns to shared within 5 s of Redis coming back", async () => {
    const [a, b] = await replicas(2, { rateRpm: 120, bucketCapacity: 4, redisFailure: "local" })
    await until(async () => (await run(a!.snapshot)).backend.replicas === 2, 3000)
    await redis.stop()
    try {
      expect(await run(a!.tryTake("normal"))).toBeTypeOf("boolean")
      await until(async () => (await backendState(a!)) === "local_fallback" && (await backendState(b!)) === "local_fallback", 2000)
      const s = await run(a!.snapshot)
      // Its share: 120 rpm and 4 tokens split between the 2 replicas last seen.
      expect(s.baseRpm).toBe(60)
      expect(s.capacity).toBe(2)
      expect(s.backend.healthy).toBe(false)
      // The tryTake above may have spent a local token: start from a full local bucket.
      await until(async () => (await run(a!.snapshot)).tokens >= 2, 3000)
      const started = Date.now()
      await run(Effect.all([a!.take("normal"), a!.take("normal"), a!.take("normal")]))
      // Two from the local bucket, the third a token interval (1 s at 60 rpm) later: limited, not hung.
      expect(Date.now() - started).toBeLessThan(2000)
    } finally {
      await redis.restart()
    }
    const back = await until(async () => (await backendState(a!)) === "shared" && (await backendState(b!)) === "shared", 5000)
    expect(back).toBeLessThan(5000)
    expect(await run(a!.tryTake("urgent"))).toBe(true)
  })

  it("local, Redis restarted empty: the sends made meanwhile count again, and a 429 after it learns them all", async () => {
    const [a, b] = await replicas(2, { rateRpm: 600, bucketCapacity: 50, rateControl: "learning", redisFailure: "local" })
    const keys = redisKeys(lastKey())
    await until(async () => (await run(a!.snapshot)).backend.replicas === 2, 3000)
    const leaderBefore = (await run(a!.snapshot)).backend.leader ? a! : b!
    const send = async (limiter: Limiter, outcome: "ok" | "throttled" = "ok") => {
      expect(await run(limiter.tryTake("normal"))).toBe(true)
      await run(limiter.record(outcome, await run(limiter.dispatched)))
    }
    for (let i = 0; i < 30; i++) await send(i % 2 === 0 ? a! : b!)
    // The leader has drained them (evidence still in Redis dies with it).
    const before = new Redis(redis.url)
    try {
      await until(async () => (await before.llen(keys.evidence)) === 0, 3000)
    } finally {
      before.disconnect()
    }
    await redis.stop()
    try {
      await until(async () => (await backendState(a!)) === "local_fallback" && (await backendState(b!)) === "local_fallback", 3000)
      // Each replica's share: 300 rpm, 25 tokens.
      for (let i = 0; i < 10; i++) await Promise.all([send(a!), send(b!)])
    } finally {
      await redis.restart()
    }
    await until(async () => (await backendState(a!)) === "shared" && (await backendState(b!)) === "shared", 5000)
    // The emptied Redis' send window holds the outage's 20 sends again: the learned count will count them.
    const client = new Redis(redis.url)
    try {
      expect(await client.zcard(keys.window)).toBe(20)
    } finally {
      client.disconnect()
    }
    // The leader before the outage leads again, with the law that saw the 30 sends before it.
    await until(async () => (await run(leaderBefore.snapshot)).backend.leader, 3000)
    for (let i = 0; i < 3; i++) await send(a!)
    await send(b!, "throttled")
    await until(async () => (await run(a!.snapshot)).mode === "hold", 3000)
    // 53 calls counted in the last minute (30 before, 20 during, 3 after): the quota is that
    // many. The leader's law without the outage's sends learned 32, a fresh one 3.
    expect((await run(b!.snapshot)).effectiveRpm).toBeGreaterThanOrEqual(0.7 * 53)
  })

  it("closed: limited requests are refused with a Retry-After while Redis is down", async () => {
    const [a] = await replicas(1, { rateRpm: 60, bucketCapacity: 2, redisFailure: "closed" })
    await redis.stop()
    try {
      expect(await run(a!.tryTake("urgent"))).toBe(false)
      expect(await backendState(a!)).toBe("closed")
      const refused = await run(Effect.either(a!.take("urgent")))
      expect(Either.isLeft(refused) && refused.left._tag === "SharedLimitUnavailable").toBe(true)
      expect(await run(a!.retryAfterMs)).toBeGreaterThanOrEqual(1000)
    } finally {
      await redis.restart()
    }
    await until(async () => (await backendState(a!)) === "shared", 5000)
    expect(await run(a!.tryTake("urgent"))).toBe(true)
  })

  it("at start: a replica that cannot reach Redis starts at its share and joins once Redis answers", async () => {
    await redis.stop()
    let limiter: Limiter
    try {
      const started = Date.now()
      ;[limiter] = (await replicas(1, { rateRpm: 60, bucketCapacity: 2, redisFailure: "local" })) as [Limiter]
      expect(Date.now() - started).toBeLessThan(2000)
      expect(await backendState(limiter)).toBe("local_fallback")
      expect(await run(limiter.tryTake("normal"))).toBe(true)
    } finally {
      await redis.restart()
    }
    await until(async () => (await backendState(limiter)) === "shared", 5000)
  })

  it("at start: a hung Redis (SIGSTOP) delays start-up by a second at most", async () => {
    redis.pause()
    let limiter: Limiter
    try {
      const started = Date.now()
      ;[limiter] = (await replicas(1, { rateRpm: 60, bucketCapacity: 2, redisFailure: "closed" })) as [Limiter]
      expect(Date.now() - started).toBeLessThan(2500)
      expect(await backendState(limiter)).toBe("closed")
    } finally {
      redis.resume()
    }
    await until(async () => (await backendState(limiter)) === "shared", 5000)
  })

  it("never shows the Redis password", async () => {
    const [limiter] = await replicas(1, {}, "redis://sidecar:topsecret@127.0.0.1:1")
    const view = (await run(limiter!.snapshot)).backend
    expect(view.state).toBe("local_fallback")
    expect(view.url).toBe("redis://****@127.0.0.1:1")
    expect(JSON.stringify(view)).not.toContain("topsecret")
  })

  it("a hung Redis (SIGSTOP) costs a request the command timeout, not a hang", async () => {
    const [a] = await replicas(1, { rateRpm: 600, bucketCapacity: 5, redisFailure: "local" })
    redis.pause()
    try {
      const started = Date.now()
      const took = await run(a!.tryTake("high" satisfies Priority))
      expect(Date.now() - started).toBeLessThan(1000)
      expect(took).toBe(true)
      expect(await backendState(a!)).toBe("local_fallback")
    } finally {
      redis.resume()
    }
    const back = await until(async () => (await backendState(a!)) === "shared", 5000)
    expect(back).toBeLessThan(5000)
  })
})
