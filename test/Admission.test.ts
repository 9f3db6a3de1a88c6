// Admission's finish policy on the TestClock: bucket feedback, slot release, 429 retry and pause.
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, TestClock } from "effect"
import { Admission } from "../src/Admission/Admission.js"
import { Inflight, ModelSlots } from "../src/Admission/Inflight.js"
import type { AdmissionRequest, UpstreamOutcome } from "../src/Admission/Permit.js"
import { RateLimiter } from "../src/Admission/RateLimiter.js"
import { schedulerWith } from "./support/schedulerLayer.js"

const request: AdmissionRequest = { priority: "normal", model: "nvidia/x" }
const answered = (status: number, retryAfter?: string): UpstreamOutcome => ({ _tag: "Answered", status, retryAfter, body: "{}" })
const isDone = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isSome)
const acquire = (r: AdmissionRequest = request) => Effect.flatMap(Admission, (a) => a.acquire(r))
const settle = TestClock.adjust("0 millis")

// 3 rpm, capacity 1: one token every 20 s.
// ADR-009 changes the rate only at evaluation steps, so the bucket here is a constant-rate one.
const slow = { rateRpm: 3, bucketCapacity: 1, maxRetries: 2, queueTimeout: Duration.minutes(10), rateControl: "adr009" } as const

describe("permit.finish", () => {
  it.effect("delivers a 200, frees the slot and records it as ok", () =>
    Effect.gen(function*() {
      const permit = yield* acquire()
      assert.strictEqual(yield* (yield* Inflight).used, 1)
      const verdict = yield* permit.finish(answered(200))
      assert.deepStrictEqual(verdict, { _tag: "Deliver", headers: {} })
      assert.strictEqual(yield* (yield* Inflight).used, 0)
      assert.strictEqual((yield* (yield* RateLimiter).snapshot).rate429, 0)
      assert.isFalse(permit.mustConsult(200))
      assert.isTrue(permit.mustConsult(429))
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("rules a 429 a retry that keeps its seq and counts the attempt, and slows the bucket", () =>
    Effect.gen(function*() {
      const permit = yield* acquire()
      const verdict = yield* permit.finish(answered(429))
      assert.strictEqual(verdict._tag, "Retry")
      if (verdict._tag !== "Retry") return
      assert.deepInclude(verdict.next.retry, { seq: permit.seq, attempt: 1, arrivedAt: 0 })
      assert.strictEqual(yield* (yield* Inflight).used, 0, "the slot is free during the retry's wait")
      assert.strictEqual((yield* (yield* RateLimiter).snapshot).rate429, 1)
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("puts the retry ahead of a newer request of its level", () =>
    Effect.gen(function*() {
      const permit = yield* acquire() // spends the one token
      const newer = yield* Effect.fork(acquire())
      yield* settle
      const verdict = yield* permit.finish(answered(429))
      if (verdict._tag !== "Retry") return assert.fail("expected a retry")
      const retry = yield* Effect.fork(acquire(verdict.next))
      yield* settle
      yield* TestClock.setTime(20_000)
      assert.isTrue(yield* isDone(retry), "the retry takes the next token")
      assert.isFalse(yield* isDone(newer))
      assert.strictEqual((yield* Fiber.join(retry)).attempt, 1)
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("passes the last 429 through with Retry-After and Retry-After-Ms from the limiter", () =>
    Effect.gen(function*() {
      const last = yield* acquire({ ...request, retry: { seq: 99, attempt: 2, arrivedAt: 0 } })
      const verdict = yield* last.finish(answered(429))
      // The bucket is empty: the next token is 20 s away.
      // The sidecar retried already: the client is told not to multiply the calls.
      assert.deepStrictEqual(verdict, { _tag: "Deliver", headers: { "retry-after": "20", "retry-after-ms": "20000", "x-should-retry": "false" } })
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("honours an upstream Retry-After: nothing is admitted before it ends", () =>
    Effect.gen(function*() {
      const permit = yield* acquire()
      yield* permit.finish(answered(429, "30"))
      const next = yield* Effect.fork(acquire())
      yield* TestClock.setTime(29_999)
      assert.isFalse(yield* isDone(next), "the 20 s token is due, but the pause holds it")
      yield* TestClock.setTime(30_000)
      assert.isTrue(yield* isDone(next))
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("gives the token back when the call never happened, and feeds nothing back for a failed call", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter
      const notSent = yield* acquire()
      assert.strictEqual((yield* limiter.snapshot).tokens, 0)
      yield* notSent.finish({ _tag: "NotSent" })
      assert.strictEqual((yield* limiter.snapshot).tokens, 1)
      const failed = yield* acquire()
      yield* failed.finish({ _tag: "Failed" })
      const after = yield* limiter.snapshot
      assert.strictEqual(after.tokens, 0)
      assert.strictEqual(after.rate429, 0)
      assert.strictEqual(yield* (yield* Inflight).used, 0)
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("stamps a retry with the first attempt's arrival, not with the time of its 429", () =>
    Effect.gen(function*() {
      yield* acquire() // spends the one token
      const second = yield* Effect.fork(acquire()) // arrives at 0, admitted at 20 s
      yield* TestClock.setTime(20_000)
      const permit = yield* Fiber.join(second)
      assert.strictEqual(permit.waitedMs, 20_000)
      yield* TestClock.setTime(25_000)
      const verdict = yield* permit.finish(answered(429))
      if (verdict._tag !== "Retry") return assert.fail("expected a retry")
      assert.strictEqual(verdict.next.retry?.arrivedAt, 0, "the queue timeout counts from the arrival")
    }).pipe(Effect.provide(schedulerWith(slow))))

  it.effect("bounds a retry's wait by its first arrival, not by the retry", () =>
    Effect.gen(function*() {
      yield* acquire() // empties the bucket
      yield* TestClock.setTime(50_000)
      // Arrived at 0 with a 60 s queue timeout: 10 s left, although the retry queues at 50 s.
      const retry = yield* Effect.fork(Effect.flip(acquire({ ...request, retry: { seq: 1, attempt: 1, arrivedAt: 0 } })))
      yield* TestClock.setTime(59_999)
      assert.isFalse(yield* isDone(retry))
      yield* TestClock.setTime(60_000)
      const error = yield* Fiber.join(retry)
      assert.strictEqual(error._tag, "RateLimited")
    }).pipe(Effect.provide(schedulerWith({ ...slow, rateRpm: 0.5, queueTimeout: Duration.seconds(60) }))))
})

describe("a concurrency cap is not a rate cap", () => {
  const capBody = "{\"error\":\"Worker local total request limit reached (2/2)\"}"
  const many = { rateRpm: 600, bucketCapacity: 100, maxRetries: 2, queueTimeout: Duration.minutes(10) } as const

  it.effect("learns the model's in-flight limit from the NIM body, leaves the rate alone, and holds the limit", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter
      const model = "meta/llama"
      const held = [yield* acquire({ ...request, model }), yield* acquire({ ...request, model }), yield* acquire({ ...request, model })]
      const verdict = yield* held[2]!.finish({ _tag: "Answered", status: 429, retryAfter: undefined, body: capBody })
      assert.strictEqual(verdict._tag, "Retry", "the call is retried")
      const after = yield* limiter.snapshot
      assert.strictEqual(after.effectiveRpm, 600, "the rate is not cut")
      assert.strictEqual(after.rate429, 0, "the law did not hear a rate signal")
      assert.deepStrictEqual((yield* (yield* ModelSlots).limits), { [model]: 2 })
      // Two calls to the model are in flight: a third waits for one of them, other models do not.
      const third = yield* Effect.fork(acquire({ ...request, model }))
      const other = yield* acquire({ ...request, model: "other/model" })
      yield* settle
      assert.isFalse(yield* isDone(third))
      yield* held[0]!.finish(answered(200))
      yield* settle
      assert.isTrue(yield* isDone(third))
      yield* other.finish(answered(200))
    }).pipe(Effect.provide(schedulerWith(many))))

  it.effect("bounds the wait for a model at its in-flight limit by the queue timeout", () =>
    Effect.gen(function*() {
      const model = "meta/llama"
      const held = [yield* acquire({ ...request, model }), yield* acquire({ ...request, model }), yield* acquire({ ...request, model })]
      yield* held[2]!.finish({ _tag: "Answered", status: 429, retryAfter: undefined, body: capBody })
      yield* TestClock.setTime(1_000)
      const waiting = yield* Effect.fork(Effect.flip(acquire({ ...request, model })))
      yield* TestClock.setTime(60_999)
      assert.isFalse(yield* isDone(waiting), "still within the queue timeout")
      yield* TestClock.setTime(61_000)
      assert.isTrue(yield* isDone(waiting), "the model never had room: refused at the queue timeout")
      const error = yield* Fiber.join(waiting)
      assert.strictEqual(error._tag, "RateLimited")
      if (error._tag === "RateLimited") assert.strictEqual(error.reason, "queue_timeout")
      // Nothing was left behind: room frees as before.
      yield* held[0]!.finish(answered(200))
      const next = yield* acquire({ ...request, model })
      yield* next.finish(answered(200))
    }).pipe(Effect.provide(schedulerWith({ ...many, queueTimeout: Duration.seconds(60) }))))

  it.effect("still cuts for a plain 429 without the cap body", () =>
    Effect.gen(function*() {
      const permit = yield* acquire({ ...request, model: "meta/llama" })
      yield* permit.finish({ _tag: "Answered", status: 429, retryAfter: undefined, body: "{\"error\":\"Too Many Requests\"}" })
      assert.deepStrictEqual((yield* (yield* ModelSlots).limits), {})
      assert.isBelow((yield* (yield* RateLimiter).snapshot).effectiveRpm, 600, "the learning law reacts to a rate signal at once")
    }).pipe(Effect.provide(schedulerWith(many))))
})
