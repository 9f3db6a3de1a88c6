import { assert, describe, it } from "@effect/vitest"
import { Chunk, Context, Effect, Fiber, Layer, Ref, Stream, TestClock } from "effect"
import { Inflight, ModelSlots } from "../src/Admission/Inflight.js"
import { PriorityQueue } from "../src/Admission/PriorityQueue.js"
import { RateLimiter } from "../src/Admission/RateLimiter.js"
import { makeTicket } from "../src/Admission/Ticket.js"
import { Snapshot } from "../src/Control/Snapshot.js"
import { Metrics } from "../src/Observability/Metrics.js"
import { SidecarConfig } from "../src/Config/SidecarConfig.js"

// The real in-memory services; Metrics counts how often a snapshot is computed (each computation reads the counts once).
const counted = (computations: Ref.Ref<number>) => {
  const countingMetrics = Layer.effect(Metrics, Effect.map(Metrics, (m) => ({
    ...m,
    requestCounts: Effect.zipRight(Ref.update(computations, (n) => n + 1), m.requestCounts)
  }))).pipe(Layer.provide(Metrics.layer))
  return Snapshot.layer.pipe(
    Layer.provideMerge(Layer.mergeAll(countingMetrics, PriorityQueue.layer, RateLimiter.layer, Inflight.layer, ModelSlots.layer)),
    Layer.provide(SidecarConfig.layerTest({ queueMax: 10, queueFullPolicy: "reject", rateControl: "adr009" }))
  )
}

describe("Snapshot", () => {
  it.scoped("serves 20 dashboard streams for 5 seconds with 5 computations, not 100", () =>
    Effect.gen(function*() {
      const computations = yield* Ref.make(0)
      const snapshot = yield* Effect.provide(Snapshot, counted(computations))
      const subscribers = yield* Effect.forEach(
        Array.from({ length: 20 }),
        () => snapshot.events.pipe(Stream.take(6), Stream.runCollect, Effect.fork),
        { concurrency: "unbounded" }
      )
      yield* TestClock.adjust("4 seconds")
      const frames = yield* Effect.forEach(subscribers, Fiber.join)
      assert.strictEqual(yield* Ref.get(computations), 5)
      for (const f of frames) {
        const list = Chunk.toReadonlyArray(f)
        assert.strictEqual(list[0], "retry: 3000\n\n")
        assert.strictEqual(list.length, 6)
        assert.isTrue(list.slice(1).every((frame) => frame.startsWith("data: {") && frame.endsWith("}\n\n")))
      }
    }))

  it.scoped("emits the first data frame at once and the next one a second later", () =>
    Effect.gen(function*() {
      const computations = yield* Ref.make(0)
      const snapshot = yield* Effect.provide(Snapshot, counted(computations))
      const two = yield* snapshot.events.pipe(Stream.take(3), Stream.runCollect, Effect.fork)
      yield* TestClock.adjust("999 millis")
      assert.isTrue((yield* Fiber.poll(two))._tag === "None", "second data frame not before 1 s")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(Chunk.size(yield* Fiber.join(two)), 3)
    }))

  it.scoped("carries requests, queue per priority, bucket, retreat and in-flight state", () =>
    Effect.gen(function*() {
      const computations = yield* Ref.make(0)
      const services = yield* Layer.build(counted(computations))
      const snapshot = Context.get(services, Snapshot)
      const queue = Context.get(services, PriorityQueue)
      const limiter = Context.get(services, RateLimiter)
      const inflight = Context.get(services, Inflight)
      const metrics = Context.get(services, Metrics)
      for (let i = 0; i < 7; i++) yield* metrics.requestCompleted("normal", 200)
      for (const [seq, priority, id] of [[1, "high", "a"], [2, "normal", "b"], [3, "normal", "b"]] as const) {
        const client = yield* queue.client(id)
        yield* queue.offer(makeTicket({ seq, priority, client, model: undefined, enqueuedAt: 0, deadline: 600_000, span: undefined }))
      }
      yield* inflight.tryAcquire
      yield* inflight.tryAcquire
      // 40 rpm, capacity 40: 4 answers, all 429, then one evaluation step cuts the rate by a quarter.
      for (let i = 0; i < 4; i++) yield* limiter.record("throttled", 0)
      yield* TestClock.adjust("5 seconds")
      const s = yield* snapshot.current
      assert.deepStrictEqual(s.requests, { total: 7, by_status: { "200": 7 }, errors: 0, rate_limited: 0, current_rpm: 7 })
      assert.deepStrictEqual(s.queue.by_priority, { urgent: 0, high: 1, normal: 2, low: 0 })
      assert.deepStrictEqual(s.clients, {
        tracked: 2,
        busiest: [{ id: "b", queued: 2, admitted_per_minute: 0 }, { id: "a", queued: 1, admitted_per_minute: 0 }]
      })
      assert.strictEqual(s.queue.size, 3)
      assert.deepStrictEqual(s.token_bucket, { tokens: 40, capacity: 40, rate_rpm: 30 })
      assert.deepStrictEqual(s.retreat, { state: "retreat", effective_rpm: 30, base_rpm: 40, rate_429: 1 })
      assert.strictEqual(s.inflight, 2)
    }))
})
