import { assert, describe, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Fiber, Layer, Option, Ref, Stream, TestClock } from "effect"
import { Metrics } from "../src/Metrics.js"
import { RequestQueue } from "../src/RequestQueue.js"
import { Snapshot } from "../src/Snapshot.js"
import { TokenBucket } from "../src/TokenBucket.js"

// Fakes that count how often a snapshot is computed (each computation reads the counts once).
const counted = (computations: Ref.Ref<number>) =>
  Snapshot.layer.pipe(
    Layer.provide([
      Layer.succeed(Metrics, Metrics.of({
        requestCompleted: () => Effect.void,
        queueWait: () => Effect.void,
        upstreamAnswered: () => Effect.void,
        fallbackPassthrough: Effect.void,
        requestDuration: () => Effect.void,
        streamFirstByte: () => Effect.void,
        tokensUsed: () => Effect.void,
        render: () => Effect.succeed({ contentType: "text/plain", body: "" }),
        requestCounts: Effect.as(Ref.updateAndGet(computations, (n) => n + 1), { total: 7, byStatus: { "200": 7 }, errors: 0, rateLimited: 0, currentRpm: 7 })
      })),
      Layer.succeed(RequestQueue, RequestQueue.of({
        admitNow: () => Effect.succeed(Option.none()),
        admit: () => Effect.die("unused"),
        slots: { tryAcquire: Effect.succeed(true), acquire: Effect.void, acquireWithin: () => Effect.succeed(true), releaser: () => Effect.void, used: Effect.succeed(2) },
        head: Effect.never,
        headChanged: () => Effect.never,
        next: Effect.never,
        expireLow: () => Effect.void,
        close: Effect.void,
        settings: Effect.succeed({ max: 10, policy: "reject", lowTimeout: Duration.seconds(2) }),
        configure: () => Effect.void,
        snapshot: Effect.succeed({
          max: 10, policy: "reject", lowTimeout: Duration.seconds(2), size: 3, byPriority: { urgent: 0, high: 1, normal: 2, low: 0 },
          enqueued: 5, dequeued: 2, dropped: 0, timedOut: 0, bypassed: 0, inflight: 2
        })
      })),
      Layer.succeed(TokenBucket, TokenBucket.of({
        take: Effect.void,
        tryTake: Effect.succeed(true),
        refund: Effect.void,
        record: () => Effect.void,
        pauseFor: () => Effect.void,
        configure: () => Effect.void,
        snapshot: Effect.succeed({ tokens: 4.5, capacity: 40, baseRpm: 40, effectiveRpm: 30, mode: "retreat", rate429: 0.08, nextTokenInMs: 0, pausedForMs: 0 })
      }))
    ])
  )

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
      const snapshot = yield* Effect.provide(Snapshot, counted(yield* Ref.make(0)))
      const s = yield* snapshot.current
      assert.deepStrictEqual(s.requests, { total: 7, by_status: { "200": 7 }, errors: 0, rate_limited: 0, current_rpm: 7 })
      assert.deepStrictEqual(s.queue.by_priority, { urgent: 0, high: 1, normal: 2, low: 0 })
      assert.strictEqual(s.queue.size, 3)
      assert.deepStrictEqual(s.token_bucket, { tokens: 4.5, capacity: 40, rate_rpm: 30 })
      assert.deepStrictEqual(s.retreat, { state: "retreat", effective_rpm: 30, base_rpm: 40, rate_429: 0.08 })
      assert.strictEqual(s.inflight, 2)
    }))
})
