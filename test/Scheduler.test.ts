// Admission + Dispatcher with the real RateLimiter, on the TestClock (starts at 0).
// Each test empties the bucket first, so admissions happen exactly when a token is due.
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import type { AdmissionError, RateLimited } from "../src/Common/Errors.js"
import type { Priority } from "../src/Common/Priority.js"
import { RateLimiter } from "../src/Admission/RateLimiter.js"
import { Scheduler, schedulerWith } from "./support/schedulerLayer.js"

// 3 rpm, capacity 1: one token every 20 s (the 5 s refill slices are exact quarters).
const slow = { rateRpm: 3, bucketCapacity: 1, lowTimeout: Duration.minutes(10) } as const

const settle = TestClock.adjust("0 millis")
const isDone = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isSome)

const emptyBucket = Effect.flatMap(RateLimiter, (b) => b.take())

/** Forks `admit` and lets it reach the queue, so forks enqueue in program order. */
const enqueue = (priority: Priority, seq?: number) =>
  Effect.gen(function*() {
    const queue = yield* Scheduler
    const fiber = yield* Effect.fork(queue.admit(priority, seq))
    yield* settle
    return fiber
  })

/** Forks an `admit` that is expected to fail; joining it yields the error. */
const enqueueFailing = (priority: Priority) =>
  Effect.gen(function*() {
    const queue = yield* Scheduler
    const fiber = yield* Effect.fork(Effect.flip(queue.admit(priority)))
    yield* settle
    return fiber
  })

const asRateLimited = (error: AdmissionError): RateLimited => {
  if (error._tag !== "RateLimited") return assert.fail(`expected RateLimited, got ${error._tag}`)
  return error
}

describe("admission order", () => {
  it.effect("admits urgent > high > normal > low, FIFO within a level, one per token", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const order = yield* Ref.make<ReadonlyArray<string>>([])
      const arrivals: ReadonlyArray<readonly [Priority, string]> = [
        ["low", "L1"], ["normal", "N1"], ["urgent", "U1"], ["high", "H1"],
        ["normal", "N2"], ["low", "L2"], ["urgent", "U2"], ["high", "H2"]
      ]
      for (const [priority, label] of arrivals) {
        yield* Effect.fork(queue.admit(priority).pipe(Effect.zipRight(Ref.update(order, (o) => [...o, label]))))
        yield* settle
      }
      assert.strictEqual((yield* queue.queue.snapshot).size, 8)

      // 60 rpm: the k-th token arrives at k seconds.
      for (let k = 1; k <= 8; k++) {
        yield* TestClock.setTime(k * 1000 - 1)
        assert.strictEqual((yield* Ref.get(order)).length, k - 1, `before token ${k}`)
        yield* TestClock.setTime(k * 1000)
        assert.strictEqual((yield* Ref.get(order)).length, k, `at token ${k}`)
      }
      assert.deepStrictEqual(yield* Ref.get(order), ["U1", "U2", "H1", "H2", "N1", "N2", "L1", "L2"])
    }).pipe(Effect.provide(schedulerWith({ rateRpm: 60, bucketCapacity: 1, lowTimeout: Duration.minutes(10) }))))

  it.effect("admits an urgent request that arrived while the dispatcher waited for a token first", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const normal = yield* enqueue("normal") // next in line; the dispatcher waits for the 20 s token
      yield* TestClock.setTime(10_000)
      const urgent = yield* enqueue("urgent")

      yield* TestClock.setTime(19_999)
      assert.isFalse(yield* isDone(urgent))
      assert.isFalse(yield* isDone(normal))
      yield* TestClock.setTime(20_000)
      assert.isTrue(yield* isDone(urgent), "urgent gets the token")
      assert.isFalse(yield* isDone(normal))
      assert.strictEqual((yield* Fiber.join(urgent)).waitedMs, 10_000)

      yield* TestClock.setTime(39_999)
      assert.isFalse(yield* isDone(normal))
      yield* TestClock.setTime(40_000)
      assert.strictEqual((yield* Fiber.join(normal)).waitedMs, 40_000)
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("puts a retry with its original seq ahead of newer requests of its level", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      const first = yield* queue.admit("normal") // spends the bucket's one token
      const newer = yield* enqueue("normal")
      const retry = yield* enqueue("normal", first.seq)

      yield* TestClock.setTime(20_000)
      assert.isTrue(yield* isDone(retry))
      assert.isFalse(yield* isDone(newer))
    }).pipe(Effect.provide(schedulerWith(slow))))
})

describe("queue full policies", () => {
  it.effect("reject: answers QueueFull at once when the queue is at its bound", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const waiting = yield* enqueue("low")
      assert.strictEqual((yield* queue.queue.snapshot).size, 1)

      const error = yield* Effect.flip(queue.admit("urgent"))
      assert.strictEqual(error._tag, "QueueFull")
      assert.deepInclude(error, { capacity: 1 })
      assert.isFalse(yield* isDone(waiting), "the queued request is untouched")
    }).pipe(Effect.provide(schedulerWith({ ...slow, queueMax: 1, queueFullPolicy: "reject" }))))

  it.effect("passthrough: skips the full queue but still waits for a token", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      // The one token in the bucket and an idle queue: admitted at once, no queueing involved.
      const first = yield* queue.admit("normal")
      assert.isFalse(first.bypassed)
      assert.strictEqual(first.waitedMs, 0)

      const second = yield* enqueue("normal")
      yield* TestClock.setTime(19_999)
      assert.isFalse(yield* isDone(second))
      yield* TestClock.setTime(20_000)
      const admitted = yield* Fiber.join(second)
      assert.isTrue(admitted.bypassed)
      assert.strictEqual(admitted.waitedMs, 20_000)

      const snapshot = yield* queue.queue.snapshot
      assert.strictEqual(snapshot.bypassed, 1)
      assert.strictEqual(snapshot.size, 0)
    }).pipe(Effect.provide(schedulerWith({ ...slow, queueMax: 0, queueFullPolicy: "passthrough" }))))

  it.effect("passthrough: gives up with token_timeout after the queue timeout", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const bypass = yield* enqueueFailing("normal")
      yield* TestClock.setTime(9_999)
      assert.isFalse(yield* isDone(bypass))
      yield* TestClock.setTime(10_000)
      assert.strictEqual(asRateLimited(yield* Fiber.join(bypass)).reason, "token_timeout")
    }).pipe(Effect.provide(schedulerWith({
      ...slow,
      queueMax: 0,
      queueFullPolicy: "passthrough",
      queueTimeout: Duration.seconds(10)
    }))))

  it.effect("passthrough: still respects the in-flight bound, and frees the slot when the wait fails", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      const holder = yield* queue.admit("normal") // the only slot
      const bypass = yield* enqueue("normal")
      yield* TestClock.setTime(5_000)
      assert.isFalse(yield* isDone(bypass), "tokens are there, but no slot")
      assert.strictEqual(yield* queue.used, 1)
      yield* holder.release
      yield* settle
      const admitted = yield* Fiber.join(bypass)
      assert.isTrue(admitted.bypassed)
      assert.strictEqual(yield* queue.used, 1)

      const starved = yield* enqueueFailing("normal")
      yield* TestClock.setTime(15_000)
      assert.strictEqual(asRateLimited(yield* Fiber.join(starved)).reason, "token_timeout")
      yield* admitted.release
      assert.strictEqual(yield* queue.used, 0, "a timed-out bypass holds no slot")
    }).pipe(Effect.provide(schedulerWith({
      rateRpm: 60,
      bucketCapacity: 10,
      maxInflight: 1,
      queueMax: 0,
      queueFullPolicy: "passthrough",
      queueTimeout: Duration.seconds(10)
    }))))

  it.effect("drop_lowest: evicts the newest request of the lowest level for a higher newcomer", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const low1 = yield* enqueue("low")
      const low2 = yield* enqueueFailing("low")
      const normal = yield* enqueue("normal")

      const urgent = yield* enqueue("urgent")
      assert.isTrue(yield* isDone(low2), "the evicted caller is answered at once")
      assert.strictEqual((yield* Fiber.join(low2))._tag, "Evicted")
      assert.isFalse(yield* isDone(low1))
      assert.isFalse(yield* isDone(normal))

      const snapshot = yield* queue.queue.snapshot
      assert.deepStrictEqual(snapshot.byPriority, { urgent: 1, high: 0, normal: 1, low: 1 })
      assert.strictEqual(snapshot.dropped, 1)

      yield* TestClock.setTime(20_000)
      assert.isTrue(yield* isDone(urgent), "the newcomer is served first")
    }).pipe(Effect.provide(schedulerWith({ ...slow, queueMax: 3, queueFullPolicy: "drop_lowest" }))))

  it.effect("drop_lowest: rejects a newcomer that is not strictly higher than the lowest waiting", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const normal1 = yield* enqueue("normal")
      const normal2 = yield* enqueue("normal")

      for (const priority of ["normal", "low"] as const) {
        const newcomer = yield* enqueueFailing(priority)
        assert.isTrue(yield* isDone(newcomer), `${priority} newcomer answered at once`)
        assert.strictEqual((yield* Fiber.join(newcomer))._tag, "QueueFull", priority)
      }
      assert.isFalse(yield* isDone(normal1))
      assert.isFalse(yield* isDone(normal2))
      const snapshot = yield* queue.queue.snapshot
      assert.strictEqual(snapshot.size, 2)
      assert.strictEqual(snapshot.dropped, 0)
    }).pipe(Effect.provide(schedulerWith({ ...slow, queueMax: 2, queueFullPolicy: "drop_lowest" }))))
})

describe("leaving the queue", () => {
  it.effect("removes an interrupted caller and gives its token to the next one", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const gaveUp = yield* enqueue("normal")
      yield* TestClock.setTime(5_000)
      yield* Fiber.interrupt(gaveUp)
      assert.strictEqual((yield* queue.queue.snapshot).size, 0)

      yield* TestClock.setTime(10_000)
      const next = yield* enqueue("normal")
      yield* TestClock.setTime(19_999)
      assert.isFalse(yield* isDone(next))
      yield* TestClock.setTime(20_000)
      assert.isTrue(yield* isDone(next), "admitted with the token the first caller would have had")
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("keeps the token of an interrupted caller for whoever comes next", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const gaveUp = yield* enqueue("normal")
      yield* TestClock.setTime(5_000)
      yield* Fiber.interrupt(gaveUp)

      // The 20 s token is taken by the dispatcher and held; nobody is waiting then.
      yield* TestClock.setTime(30_000)
      const later = yield* enqueue("normal")
      assert.isTrue(yield* isDone(later), "admitted at once, not at the 40 s token")
      assert.strictEqual((yield* Fiber.join(later)).waitedMs, 0)
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("answers a low request next in line low_priority_timeout after lowTimeout", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const low = yield* enqueueFailing("low")
      yield* TestClock.setTime(1_999)
      assert.isFalse(yield* isDone(low))
      yield* TestClock.setTime(2_000)
      const error = asRateLimited(yield* Fiber.join(low))
      assert.strictEqual(error.reason, "low_priority_timeout")
      assert.isAtLeast(error.retryAfterMs, 1000)

      const snapshot = yield* queue.queue.snapshot
      assert.strictEqual(snapshot.size, 0)
      assert.strictEqual(snapshot.dropped, 1)
    }).pipe(Effect.provide(schedulerWith({ ...slow, lowTimeout: Duration.seconds(2) }))))

  it.effect("admits a low request whose token comes within lowTimeout", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const low = yield* enqueue("low")
      yield* TestClock.setTime(1_000)
      assert.strictEqual((yield* Fiber.join(low)).waitedMs, 1_000)
    }).pipe(Effect.provide(schedulerWith({ rateRpm: 60, bucketCapacity: 1, lowTimeout: Duration.seconds(2) }))))

  // Fails on the current src/: the dispatcher committed to the cancelled normal request's
  // token wait (no low timeout), so the low request behind it waits for the 20 s token.
  it.effect("times out a low request 2 s after it becomes next in line because the head left", () =>
    Effect.gen(function*() {
      yield* emptyBucket
      const normal = yield* enqueue("normal")
      const low = yield* enqueueFailing("low")
      yield* TestClock.setTime(1_000)
      yield* Fiber.interrupt(normal) // the low request is next in line from here

      yield* TestClock.setTime(2_999)
      assert.isFalse(yield* isDone(low))
      yield* TestClock.setTime(3_000)
      assert.isTrue(yield* isDone(low), "answered by 2 s after it became next in line")
      assert.strictEqual(asRateLimited(yield* Fiber.join(low)).reason, "low_priority_timeout")
    }).pipe(Effect.provide(schedulerWith({ ...slow, lowTimeout: Duration.seconds(2) }))))

  it.effect("answers queue_timeout after the queue timeout and leaves the queue", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const waiting = yield* enqueueFailing("normal")
      yield* TestClock.setTime(9_999)
      assert.isFalse(yield* isDone(waiting))
      yield* TestClock.setTime(10_000)
      const error = asRateLimited(yield* Fiber.join(waiting))
      assert.strictEqual(error.reason, "queue_timeout")
      assert.strictEqual(error.retryAfterMs, 10_000, "the next token is 10 s away")

      const snapshot = yield* queue.queue.snapshot
      assert.strictEqual(snapshot.size, 0)
      assert.strictEqual(snapshot.timedOut, 1)
    }).pipe(Effect.provide(schedulerWith({ ...slow, queueTimeout: Duration.seconds(10) }))))

  it.effect("close answers every waiting request ShuttingDown and refuses new ones", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      const waiting = [yield* enqueueFailing("urgent"), yield* enqueueFailing("normal"), yield* enqueueFailing("low")]
      yield* queue.queue.close
      yield* settle
      for (const fiber of waiting) {
        assert.isTrue(yield* isDone(fiber))
        assert.strictEqual((yield* Fiber.join(fiber))._tag, "ShuttingDown")
      }
      assert.strictEqual((yield* Effect.flip(queue.admit("urgent")))._tag, "ShuttingDown")
      assert.strictEqual((yield* queue.queue.snapshot).size, 0)
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("refuses a max below the current depth with InvalidPatch", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      yield* emptyBucket
      for (let i = 0; i < 3; i++) yield* enqueue("normal")

      const error = yield* Effect.flip(queue.queue.configure({ max: 2 }))
      assert.strictEqual(error._tag, "InvalidPatch")
      assert.strictEqual(error.field, "queue_max_size")
      assert.strictEqual((yield* queue.queue.settings).max, 10)

      yield* queue.queue.configure({ max: 3 })
      assert.strictEqual((yield* queue.queue.settings).max, 3)
      assert.strictEqual((yield* Effect.flip(queue.admit("urgent")))._tag, "QueueFull")
    }).pipe(Effect.provide(schedulerWith({ ...slow, queueMax: 10, queueFullPolicy: "reject" }))))
})

describe("in-flight bound", () => {
  it.effect("admits no more than maxInflight until a release", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      const callers = [yield* enqueue("normal"), yield* enqueue("normal"), yield* enqueue("normal"), yield* enqueue("normal")]
      const done = Effect.map(Effect.forEach(callers, isDone), (d) => d.filter(Boolean).length)

      assert.strictEqual(yield* done, 2)
      assert.strictEqual(yield* queue.used, 2)
      yield* TestClock.setTime(60_000) // plenty of tokens by now
      assert.strictEqual(yield* done, 2, "tokens alone do not admit more")

      const [first, second] = callers
      const firstAdmission = yield* Fiber.join(first!)
      yield* firstAdmission.release
      yield* settle
      assert.strictEqual(yield* done, 3)
      assert.strictEqual(yield* queue.used, 2)

      yield* firstAdmission.release // release runs once
      yield* settle
      assert.strictEqual(yield* done, 3)

      yield* (yield* Fiber.join(second!)).release
      yield* settle
      assert.strictEqual(yield* done, 4)
    }).pipe(Effect.provide(schedulerWith({ rateRpm: 60, bucketCapacity: 10, maxInflight: 2 }))))

  it.effect("counts a released admission out of inflight", () =>
    Effect.gen(function*() {
      const queue = yield* Scheduler
      const admission = yield* queue.admit("normal")
      assert.strictEqual(yield* queue.used, 1)
      yield* admission.release
      assert.strictEqual(yield* queue.used, 0)
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(admission.release)))
      assert.strictEqual(yield* queue.used, 0, "a second release changes nothing")
    }).pipe(Effect.provide(schedulerWith({ rateRpm: 60, bucketCapacity: 10, maxInflight: 2 }))))
})
