// ADR-009 (SIDECAR_RATE_CONTROL=adr009) through RateLimiter.record and the bucket's evaluation
// fiber, which runs at t = 0, 5 s, 10 s, ... under the TestClock. The pure law: test/Adr009.test.ts.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import { RateLimiter } from "../src/Admission/RateLimiter.js"
import { bucketWith } from "./support/schedulerLayer.js"

// 40 rpm base: one retreat step is 40 -> 30 -> 22.5 -> ...
const Base40 = bucketWith({ rateRpm: 40, bucketCapacity: 40, rateControl: "adr009" })

/** `ok` and `throttled` outcomes, recorded at the current TestClock time. */
const recordMany = (ok: number, throttled: number) =>
  Effect.gen(function*() {
    const bucket = yield* RateLimiter
    const sentAt = yield* bucket.dispatched
    for (let i = 0; i < ok; i++) yield* bucket.record("ok", sentAt)
    for (let i = 0; i < throttled; i++) yield* bucket.record("throttled", sentAt)
  })

const state = Effect.map(RateLimiter, (b) => b.snapshot).pipe(
  Effect.flatten,
  Effect.map((s) => ({ mode: s.mode, rpm: s.effectiveRpm }))
)

describe("ADR-009 through RateLimiter", () => {
  it.effect("wakes a waiting take when the rate rises within a mode", () =>
    Effect.gen(function*() {
      const bucket = yield* RateLimiter
      yield* TestClock.setTime(1_000)
      yield* recordMany(0, 100)
      // Retreat to the 5 rpm floor; recovery from 180 s climbs 2 rpm per step, all in "recover".
      yield* TestClock.setTime(185_000)
      assert.deepStrictEqual(yield* state, { mode: "recover", rpm: 9 })
      yield* bucket.take() // the one token (capacity 1)
      const waiting = yield* Effect.fork(bucket.take()) // at 9 rpm: due at 191.667 s
      yield* TestClock.setTime(190_000)
      assert.deepStrictEqual(yield* state, { mode: "recover", rpm: 11 })
      // 0.75 token earned by 190 s at 9 rpm, the rest at 11 rpm: due at 191.364 s.
      yield* TestClock.setTime(191_363)
      assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)))
      yield* TestClock.setTime(191_364)
      assert.isTrue(Option.isSome(yield* Fiber.poll(waiting)), "the waiter saw the new rate")
    }).pipe(Effect.provide(bucketWith({ rateRpm: 40, bucketCapacity: 1, rateControl: "adr009" }))))

  it.effect("enters retreat at the next evaluation step after 5 % 429s", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(95, 5)

      yield* TestClock.setTime(4_999)
      assert.deepStrictEqual(yield* state, { mode: "normal", rpm: 40 })
      yield* TestClock.setTime(5_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })
    }).pipe(Effect.provide(Base40)))

  it.effect("stays normal at 4 % 429s", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(96, 4)
      yield* TestClock.setTime(5_000)
      assert.deepStrictEqual(yield* state, { mode: "normal", rpm: 40 })
    }).pipe(Effect.provide(Base40)))

  it.effect("lowers the rate only once per 5 s step however many 429s arrive", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(0, 1000)
      yield* TestClock.setTime(5_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })

      yield* TestClock.setTime(6_000)
      yield* recordMany(0, 1000)
      yield* TestClock.setTime(9_999)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })
      yield* TestClock.setTime(10_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 22.5 })
    }).pipe(Effect.provide(Base40)))

  it.effect("keeps lowering each step while 429s stay at 10 %", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(90, 10)
      for (const [at, rpm] of [[5_000, 30], [10_000, 22.5], [15_000, 16.875]] as const) {
        yield* TestClock.setTime(at)
        assert.deepStrictEqual(yield* state, { mode: "retreat", rpm }, `at ${at} ms`)
      }
    }).pipe(Effect.provide(Base40)))

  it.effect("holds the retreated rate while 429s are between 5 and 10 %", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(93, 7)
      yield* TestClock.setTime(5_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })
      yield* TestClock.setTime(60_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })
    }).pipe(Effect.provide(Base40)))

  it.effect("never lowers the rate below 5 rpm", () =>
    Effect.gen(function*() {
      // 100 % 429s stay in the 60 s window until 62 s: twelve decreasing steps.
      yield* TestClock.setTime(1_000)
      yield* recordMany(0, 100)
      yield* TestClock.setTime(35_000) // seven steps: 40 x 0.75^7
      assert.closeTo((yield* state).rpm, 40 * 0.75 ** 7, 1e-9)
      yield* TestClock.setTime(40_000) // an eighth would be 4.0
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 5 })
      yield* TestClock.setTime(60_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 5 })
    }).pipe(Effect.provide(Base40)))

  it.effect("recovers after 120 s under 2 %, adding 2 rpm per step back to normal", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(95, 5)
      yield* TestClock.setTime(5_000) // last decrease
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })

      yield* TestClock.setTime(124_999)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })
      const expected = [
        [125_000, "recover", 32],
        [130_000, "recover", 34],
        [135_000, "recover", 36],
        [140_000, "recover", 38],
        [145_000, "normal", 40],
        [150_000, "normal", 40]
      ] as const
      for (const [at, mode, rpm] of expected) {
        yield* TestClock.setTime(at)
        assert.deepStrictEqual(yield* state, { mode, rpm }, `at ${at} ms`)
      }
    }).pipe(Effect.provide(Base40)))

  it.effect("waits for 2 % 429s to leave the 120 s window before recovering", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(95, 5)
      yield* TestClock.setTime(70_000)
      yield* recordMany(98, 2) // 2 % stays in the 120 s window until 190 s
      yield* TestClock.setTime(185_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })
      yield* TestClock.setTime(190_000)
      assert.deepStrictEqual(yield* state, { mode: "recover", rpm: 32 })
    }).pipe(Effect.provide(Base40)))

  it.effect("re-enters retreat on a 429 burst during recover", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000)
      yield* recordMany(95, 5)
      yield* TestClock.setTime(125_000)
      assert.deepStrictEqual(yield* state, { mode: "recover", rpm: 32 })

      yield* TestClock.setTime(126_000)
      yield* recordMany(0, 10)
      yield* TestClock.setTime(129_999)
      assert.deepStrictEqual(yield* state, { mode: "recover", rpm: 32 })
      yield* TestClock.setTime(130_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 24 })
    }).pipe(Effect.provide(Base40)))

  // The seed's regression (a lock held across record/take/snapshot) rewritten for fibers.
  it.effect("loses no update when 50 fibers record, take and read snapshots at once", () =>
    Effect.gen(function*() {
      const bucket = yield* RateLimiter
      const fibers = 50
      const rounds = 10
      const lowest = yield* Effect.forEach(
        Array.from({ length: fibers }, (_, i) => i),
        (i) =>
          Effect.gen(function*() {
            let min = Infinity
            for (let r = 0; r < rounds; r++) {
              yield* bucket.record(i < 10 ? "throttled" : "ok", 0)
              yield* Effect.yieldNow()
              yield* bucket.take()
              min = Math.min(min, (yield* bucket.snapshot).tokens)
              yield* Effect.yieldNow()
            }
            return min
          }),
        { concurrency: "unbounded" }
      )

      // The clock never moved: no refill, so every take shows up exactly.
      const after = yield* bucket.snapshot
      assert.strictEqual(after.tokens, 1000 - fibers * rounds)
      assert.isAtLeast(Math.min(...lowest), 1000 - fibers * rounds)
      // 100 throttled of 500 outcomes; a lost record of either kind moves the ratio.
      assert.strictEqual(after.rate429, 100 / 500)

      yield* TestClock.setTime(5_000)
      assert.deepStrictEqual(yield* state, { mode: "retreat", rpm: 30 })
    }).pipe(Effect.provide(bucketWith({ rateRpm: 40, bucketCapacity: 1000, rateControl: "adr009" }))))
})
