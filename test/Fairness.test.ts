// Fair shares between clients inside a level, and per-client limits: Admission + Dispatcher with
// the real RateLimiter on the TestClock. Each test empties the key's bucket first unless it says.
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, Ref, TestClock } from "effect"
import { RateLimiter } from "../src/Admission/RateLimiter.js"
import type { AdmissionError } from "../src/Common/Errors.js"
import { toErrorResponse } from "../src/Common/ErrorResponse.js"
import type { Priority } from "../src/Common/Priority.js"
import { Scheduler, schedulerWith } from "./support/schedulerLayer.js"

// 60 rpm, capacity 1: the key's k-th token after emptying comes at k seconds.
const perSecond = { rateRpm: 60, bucketCapacity: 1, lowTimeout: Duration.minutes(10), queueTimeout: Duration.hours(1) } as const

const settle = TestClock.adjust("0 millis")
const isDone = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isSome)
const emptyBucket = Effect.flatMap(RateLimiter, (b) => b.take())

/** Forks an admission of `client` that records `label` when admitted; lets it reach the queue. */
const enqueue = (client: string, priority: Priority, order?: Ref.Ref<ReadonlyArray<string>>, label = client) =>
  Effect.gen(function*() {
    const scheduler = yield* Scheduler
    const fiber = yield* Effect.fork(scheduler.admit(priority, undefined, client).pipe(
      Effect.tap(() => (order === undefined ? Effect.void : Ref.update(order, (o) => [...o, label])))
    ))
    yield* settle
    return fiber
  })

const enqueueFailing = (client: string, priority: Priority) =>
  Effect.gen(function*() {
    const scheduler = yield* Scheduler
    const fiber = yield* Effect.fork(Effect.flip(scheduler.admit(priority, undefined, client)))
    yield* settle
    return fiber
  })

const reasonOf = (error: AdmissionError) => (error._tag === "RateLimited" ? error.reason : error._tag)

describe("fair share inside a level", () => {
  it.effect("a trickling client waits one round, not behind a flooding client's 300 requests", () =>
    Effect.gen(function*() {
      const scheduler = yield* Scheduler
      yield* emptyBucket
      const flood = []
      for (let i = 0; i < 300; i++) flood.push(yield* enqueue("flood", "normal"))
      yield* TestClock.setTime(500)
      const trickle = yield* enqueue("trickle", "normal")
      assert.strictEqual((yield* scheduler.queue.snapshot).size, 301)

      yield* TestClock.setTime(1_000)
      assert.isTrue(yield* isDone(flood[0]!), "the flood's first request had the turn")
      assert.isFalse(yield* isDone(trickle))
      yield* TestClock.setTime(1_999)
      assert.isFalse(yield* isDone(trickle))
      yield* TestClock.setTime(2_000)
      assert.isTrue(yield* isDone(trickle), "served at the next token: one round")
      assert.strictEqual((yield* Fiber.join(trickle)).waitedMs, 1_500)
      assert.isFalse(yield* isDone(flood[1]!))
      yield* TestClock.setTime(3_000)
      assert.isTrue(yield* isDone(flood[1]!), "the flood goes on when nobody else waits")
      // A second trickle request later joins the end of the round again.
      yield* TestClock.setTime(3_500)
      const again = yield* enqueue("trickle", "normal")
      yield* TestClock.setTime(5_000)
      assert.isTrue(yield* isDone(again))
      assert.isFalse(yield* isDone(flood[3]!))
    }).pipe(Effect.provide(schedulerWith({ ...perSecond, queueMax: 1000 }))))

  it.effect("serves three clients round-robin, one request per turn, FIFO within each", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const order = yield* Ref.make<ReadonlyArray<string>>([])
      for (const [client, label] of [["a", "a1"], ["a", "a2"], ["a", "a3"], ["b", "b1"], ["c", "c1"], ["b", "b2"], ["c", "c2"]] as const) {
        yield* enqueue(client, "normal", order, label)
      }
      yield* TestClock.setTime(7_000)
      assert.deepStrictEqual(yield* Ref.get(order), ["a1", "b1", "c1", "a2", "b2", "c2", "a3"])
    }).pipe(Effect.provide(schedulerWith(perSecond))))

  it.effect("a client that re-sends at once gets no credit: it alternates with a backlogged client", () =>
    Effect.gen(function*() {
      const scheduler = yield* Scheduler
      yield* emptyBucket
      const order = yield* Ref.make<ReadonlyArray<string>>([])
      for (let i = 1; i <= 4; i++) yield* enqueue("flood", "normal", order, `f${i}`)
      yield* TestClock.setTime(500)
      const loop = Effect.forEach([1, 2, 3], (i) =>
        Effect.zipRight(scheduler.admit("normal", undefined, "loop"), Ref.update(order, (o) => [...o, `l${i}`])), { discard: true })
      yield* Effect.fork(loop)
      yield* TestClock.setTime(7_000)
      assert.deepStrictEqual(yield* Ref.get(order), ["f1", "l1", "f2", "l2", "f3", "l3", "f4"])
    }).pipe(Effect.provide(schedulerWith(perSecond))))

  it.effect("keeps priorities strict across levels: a newcomer's high beats every client's normal", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const order = yield* Ref.make<ReadonlyArray<string>>([])
      yield* enqueue("a", "normal", order, "a-normal1")
      yield* enqueue("a", "normal", order, "a-normal2")
      yield* enqueue("b", "low", order, "b-low")
      yield* enqueue("b", "normal", order, "b-normal")
      yield* enqueue("c", "high", order, "c-high")
      yield* enqueue("d", "urgent", order, "d-urgent")
      yield* TestClock.setTime(6_000)
      assert.deepStrictEqual(yield* Ref.get(order), ["d-urgent", "c-high", "a-normal1", "b-normal", "a-normal2", "b-low"])
    }).pipe(Effect.provide(schedulerWith(perSecond))))

  it.effect("with fairness off, serves the level first-in first-out across clients", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const order = yield* Ref.make<ReadonlyArray<string>>([])
      for (const [client, label] of [["a", "a1"], ["a", "a2"], ["b", "b1"], ["a", "a3"], ["c", "c1"]] as const) {
        yield* enqueue(client, "normal", order, label)
      }
      yield* TestClock.setTime(5_000)
      assert.deepStrictEqual(yield* Ref.get(order), ["a1", "a2", "b1", "a3", "c1"])
    }).pipe(Effect.provide(schedulerWith({ ...perSecond, fairness: false }))))

  it.effect("drop_lowest evicts the newest request of the client with the most queued at the lowest level", () =>
    Effect.gen(function*() {
      const scheduler = yield* Scheduler
      yield* emptyBucket
      const a1 = yield* enqueue("a", "low")
      const b = [yield* enqueue("b", "low"), yield* enqueue("b", "low")]
      const bNewest = yield* enqueueFailing("b", "low")
      const a2 = yield* enqueue("a", "low") // the newest of the level, but a has fewer queued
      const normal = yield* enqueue("c", "normal")

      const urgent = yield* enqueue("d", "urgent")
      assert.isTrue(yield* isDone(bNewest), "b's newest is answered at once")
      assert.strictEqual((yield* Fiber.join(bNewest))._tag, "Evicted")
      for (const waiting of [a1, a2, b[0]!, b[1]!, normal, urgent]) assert.isFalse(yield* isDone(waiting))
      const snapshot = yield* scheduler.queue.snapshot
      assert.deepStrictEqual(snapshot.byPriority, { urgent: 1, high: 0, normal: 1, low: 4 })
      assert.strictEqual(snapshot.dropped, 1)
    }).pipe(Effect.provide(schedulerWith({ ...perSecond, queueMax: 6, queueFullPolicy: "drop_lowest" }))))
})

describe("per-client limits", () => {
  it.effect("rpm: a client over its own rate waits for its next token without holding up others", () =>
    Effect.gen(function*() {
      // The key has tokens to spare (capacity 10); client a may send 3 per minute, a burst of 3.
      const burst = [yield* enqueue("a", "normal"), yield* enqueue("a", "normal"), yield* enqueue("a", "normal")]
      for (const fiber of burst) assert.strictEqual((yield* Fiber.join(fiber)).waitedMs, 0)
      const fourth = yield* enqueue("a", "normal")
      assert.isFalse(yield* isDone(fourth))

      yield* TestClock.setTime(1_000)
      const other = yield* enqueue("b", "normal")
      assert.isTrue(yield* isDone(other), "b is served at once although a's request waits before it")
      assert.strictEqual((yield* Fiber.join(other)).waitedMs, 0)

      // 3 rpm: a's next token is 20 s after its burst.
      yield* TestClock.setTime(19_999)
      assert.isFalse(yield* isDone(fourth))
      yield* TestClock.setTime(20_000)
      assert.isTrue(yield* isDone(fourth))
      assert.strictEqual((yield* Fiber.join(fourth)).waitedMs, 20_000)

      const scheduler = yield* Scheduler
      const clients = yield* scheduler.queue.clients
      assert.deepStrictEqual(clients.busiest.map((c) => [c.id, c.queued, c.admitted_per_minute]), [["a", 0, 4], ["b", 0, 1]])
    }).pipe(Effect.provide(schedulerWith({ rateRpm: 60, bucketCapacity: 10, clients: { a: { rpm: 3 } } }))))

  it.effect("max_queued: the N+1st queued request of a client gets 429 with Retry-After; others still queue", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const queued = [yield* enqueue("a", "normal"), yield* enqueue("a", "normal")]
      const refused = yield* enqueueFailing("a", "normal")
      assert.isTrue(yield* isDone(refused), "refused at once")
      const error = yield* Fiber.join(refused)
      assert.strictEqual(reasonOf(error), "client_queue_full")
      const response = toErrorResponse(error)
      assert.strictEqual(response.status, 429)
      assert.strictEqual(response.headers["retry-after"], "1", "the key's next token is 1 s away")

      const b = yield* enqueue("b", "normal")
      yield* TestClock.setTime(3_000)
      for (const fiber of [...queued, b]) assert.isTrue(yield* isDone(fiber))
      const later = yield* enqueue("a", "normal")
      yield* TestClock.setTime(4_000)
      assert.isTrue(yield* isDone(later), "room again once its requests left the queue")
    }).pipe(Effect.provide(schedulerWith({ ...perSecond, clients: { default: { max_queued: 2 } } }))))

  it.effect("max_priority: an urgent claim from a client capped at normal is served as normal", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const order = yield* Ref.make<ReadonlyArray<string>>([])
      const capped = yield* enqueue("capped", "urgent", order)
      yield* enqueue("other", "high", order)
      yield* TestClock.setTime(2_000)
      assert.deepStrictEqual(yield* Ref.get(order), ["other", "capped"])
      const admitted = yield* Fiber.join(capped)
      assert.strictEqual(admitted.priority, "normal")
      assert.strictEqual(admitted.clientId, "capped")
    }).pipe(Effect.provide(schedulerWith({ ...perSecond, clients: { capped: { max_priority: "normal" } } }))))

  it.effect("admin change: raising a waiting client's rate brings its next token forward", () =>
    Effect.gen(function*() {
      const scheduler = yield* Scheduler
      yield* enqueue("a", "normal")
      const second = yield* enqueue("a", "normal")
      yield* TestClock.setTime(1_000)
      assert.isFalse(yield* isDone(second), "1 rpm, burst 1: the next token is a minute away")
      // Accrued: 1/60 of a token; at 60 rpm the rest takes 984 ms instead of 59 s.
      yield* scheduler.queue.configureClients({ a: { rpm: 60 } })
      yield* TestClock.setTime(1_983)
      assert.isFalse(yield* isDone(second))
      yield* TestClock.setTime(1_984)
      assert.isTrue(yield* isDone(second))
      assert.deepStrictEqual(yield* scheduler.queue.clientLimits, { a: { rpm: 60 } })
    }).pipe(Effect.provide(schedulerWith({ rateRpm: 60, bucketCapacity: 10, clients: { a: { rpm: 1 } } }))))

  it.effect("tracks at most max_clients: newcomers beyond share the overflow client", () =>
    Effect.gen(function*() {
      const scheduler = yield* Scheduler
      yield* emptyBucket
      for (const client of ["a", "b", "c", "d"]) yield* enqueue(client, "normal")
      const clients = yield* scheduler.queue.clients
      assert.strictEqual(clients.tracked, 2)
      assert.deepStrictEqual(clients.busiest.map((c) => [c.id, c.queued]), [["(overflow)", 2], ["a", 1], ["b", 1]])
    }).pipe(Effect.provide(schedulerWith({ ...perSecond, maxClients: 2 }))))
})
