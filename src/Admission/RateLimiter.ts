import { Clock, Context, Deferred, Duration, Effect, Layer, Ref, Schedule } from "effect"
import * as Retreat from "./Retreat.js"
import { SlidingCounts } from "../Common/SlidingCounts.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"

export interface LimiterSnapshot {
  readonly tokens: number
  readonly capacity: number
  readonly baseRpm: number
  readonly effectiveRpm: number
  readonly mode: Retreat.RetreatMode
  /** 429 share of upstream answers over the last 60 s. */
  readonly rate429: number
  /** Millis until the next whole token (0 when one is available now). */
  readonly nextTokenInMs: number
  readonly pausedForMs: number
}

/**
 * The rate seam: an adaptive token bucket, refilled continuously at the effective rate that its
 * control law sets from upstream answers. A shared (Redis) limiter replaces this service.
 */
export class RateLimiter extends Context.Tag("sidecar/RateLimiter")<RateLimiter, {
  /** Waits on the Clock until a token is available (and any Retry-After pause is over), then consumes it. */
  readonly take: Effect.Effect<void>
  /** Takes a token only if one is available now (and dispatch is not paused). */
  readonly tryTake: Effect.Effect<boolean>
  /** Gives back a token that was taken for a call that never happened. */
  readonly refund: Effect.Effect<void>
  /** Feeds the retreat window with one upstream outcome. */
  readonly record: (outcome: "ok" | "throttled") => Effect.Effect<void>
  /** Holds dispatch until `millis` from now (upstream Retry-After). */
  readonly pauseFor: (millis: number) => Effect.Effect<void>
  /** Hot change; accrued tokens are kept (capped at the new capacity). */
  readonly configure: (change: { readonly rateRpm?: number; readonly capacity?: number }) => Effect.Effect<void>
  readonly snapshot: Effect.Effect<LimiterSnapshot>
  /** When a request could be admitted again, at least 1 s: the next token or the end of a pause. */
  readonly retryAfterMs: Effect.Effect<number>
}>() {
  static readonly layer = Layer.scoped(
    RateLimiter,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const state = yield* Ref.make<State>({
        tokens: config.bucketCapacity,
        capacity: config.bucketCapacity,
        baseRpm: config.rateRpm,
        updatedAt: yield* Clock.currentTimeMillis,
        pausedUntil: 0,
        retreat: Retreat.initial(config.rateRpm)
      })
      // Upstream outcomes per second for the retreat window: [answers, 429s].
      const outcomes = new SlidingCounts(Retreat.params.recoverAfterMs / 1000, 2)
      const ratios = (now: number): Retreat.Ratios => {
        const ratio = (ms: number) => {
          const total = outcomes.sum(now, 0, ms / 1000)
          return total === 0 ? 0 : outcomes.sum(now, 1, ms / 1000) / total
        }
        return { recent: ratio(Retreat.params.windowMs), long: ratio(Retreat.params.recoverAfterMs) }
      }

      // The clock is read through the captured service: cheaper per call, still the TestClock in tests.
      const clock = yield* Effect.clock
      const withNow = <A>(f: (s: State, now: number) => readonly [A, State]) =>
        Effect.suspend(() => {
          const now = clock.unsafeCurrentTimeMillis()
          return Ref.modify(state, (s) => f(refill(s, now), now))
        })

      // 0 = token consumed, otherwise millis until it is worth looking again.
      const tryTake = withNow((s, now) => {
        if (s.pausedUntil > now) return [s.pausedUntil - now, s] as const
        if (s.tokens >= 1) return [0, { ...s, tokens: s.tokens - 1 }] as const
        return [untilNextToken(s), s] as const
      })

      // A waiter sleeps until its token is due, or until a hot change or refund makes it due sooner.
      const changed = yield* Ref.make(yield* Deferred.make<void>())
      const wake = Effect.flatMap(Deferred.make<void>(), (next) =>
        Effect.flatMap(Ref.getAndSet(changed, next), (previous) => Deferred.succeed(previous, undefined)))

      const take = Effect.gen(function*() {
        let wait = yield* tryTake
        while (wait > 0) {
          const signal = yield* Ref.get(changed)
          yield* Effect.race(Effect.sleep(Duration.millis(wait)), Deferred.await(signal))
          wait = yield* tryTake
        }
      })

      const record = (outcome: "ok" | "throttled") =>
        Effect.sync(() => {
          const now = clock.unsafeCurrentTimeMillis()
          outcomes.add(now, 0)
          if (outcome === "throttled") outcomes.add(now, 1)
        })

      const evaluate = withNow((s, now) => {
        return [undefined, { ...s, retreat: Retreat.evaluate(s.retreat, ratios(now), now, s.baseRpm) }] as const
      })

      const snapshot = withNow((s, now): readonly [LimiterSnapshot, State] => [{
        tokens: s.tokens,
        capacity: s.capacity,
        baseRpm: s.baseRpm,
        effectiveRpm: s.retreat.effectiveRpm,
        mode: s.retreat.mode,
        rate429: ratios(now).recent,
        nextTokenInMs: s.tokens >= 1 ? 0 : untilNextToken(s),
        pausedForMs: Math.max(0, s.pausedUntil - now)
      }, s])

      yield* evaluate.pipe(Effect.repeat(Schedule.spaced(Duration.millis(Retreat.params.stepMs))), Effect.forkScoped)

      return RateLimiter.of({
        take,
        tryTake: Effect.map(tryTake, (wait) => wait === 0),
        refund: Effect.zipRight(withNow((s) => [undefined, { ...s, tokens: Math.min(s.capacity, s.tokens + 1) }] as const), wake),
        record,
        pauseFor: (millis) => withNow((s, now) => [undefined, { ...s, pausedUntil: Math.max(s.pausedUntil, now + millis) }] as const),
        configure: (change) =>
          Effect.zipLeft(withNow((s) => {
            const capacity = change.capacity ?? s.capacity
            const baseRpm = change.rateRpm ?? s.baseRpm
            return [undefined, {
              ...s,
              capacity,
              baseRpm,
              tokens: Math.min(capacity, s.tokens),
              retreat: Retreat.rebase(s.retreat, baseRpm)
            }] as const
          }), wake),
        snapshot,
        retryAfterMs: Effect.map(snapshot, (b) => Math.max(1000, b.nextTokenInMs, b.pausedForMs))
      })
    })
  )
}

interface State {
  readonly tokens: number
  readonly capacity: number
  readonly baseRpm: number
  readonly updatedAt: number
  readonly pausedUntil: number
  readonly retreat: Retreat.Retreat
}

const MINUTE_MS = 60_000

function refill(s: State, now: number): State {
  if (now <= s.updatedAt) return s
  const earned = ((now - s.updatedAt) * s.retreat.effectiveRpm) / MINUTE_MS
  const tokens = Math.min(s.capacity, s.tokens + earned)
  // Refill arrives in slices (every evaluation step reads the state); snap float dust such as
  // 0.9999999999999999 so a token is due exactly on its boundary, not 1 ms later.
  const whole = Math.round(tokens)
  return { ...s, tokens: Math.abs(tokens - whole) < 1e-9 ? whole : tokens, updatedAt: now }
}

function untilNextToken(s: State): number {
  return Math.max(1, Math.ceil(((1 - s.tokens) * MINUTE_MS) / s.retreat.effectiveRpm))
}
