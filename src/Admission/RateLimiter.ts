import { Context, Deferred, Duration, Effect, Layer, Ref, Schedule } from "effect"
import type { SharedLimitUnavailable } from "../Common/Errors.js"
import type { Priority } from "../Common/Priority.js"
import { SidecarConfig, type SidecarConfigShape } from "../Config/SidecarConfig.js"
import { type ControlChange, type ControlLaw, type ControlLawName, stepMs } from "./ControlLaw.js"
import { laws } from "./ControlLaws.js"

export interface LimiterSnapshot {
  readonly tokens: number
  readonly capacity: number
  readonly baseRpm: number
  readonly effectiveRpm: number
  readonly law: ControlLawName
  /** The control law's state (adr009: normal/retreat/recover; learning: open/hold/probe). */
  readonly mode: string
  /** 429 share of upstream answers over the last 60 s. */
  readonly rate429: number
  /** The quota the law has learned, when it has. */
  readonly quotaEstimateRpm: number | null
  /** Millis until the next whole token (0 when one is available now). */
  readonly nextTokenInMs: number
  /** Millis until dispatch may resume: a Retry-After pause, or the law holding calls back. */
  readonly pausedForMs: number
  readonly backend: BackendView
}

/** Where the limit lives (`/status` → `limiter.backend`). */
export interface BackendView {
  /** local: this process alone; redis: shared with the replicas of the same limit key. */
  readonly kind: "local" | "redis"
  /** single: no Redis configured; shared: limited through Redis; local_fallback / closed: Redis unreachable (SIDECAR_REDIS_FAILURE). */
  readonly state: BackendState
  readonly healthy: boolean
  /** Replicas with a live heartbeat, this one included (the last count seen while Redis answered). */
  readonly replicas: number
  readonly replicaIds: ReadonlyArray<string>
  readonly replicaId: string | null
  /** This replica runs the shared control law. */
  readonly leader: boolean
  readonly limitKey: string | null
  /** Credentials masked. */
  readonly url: string | null
  readonly failureMode: "local" | "closed" | null
  readonly lastError: string | null
}

export type BackendState = "single" | "shared" | "local_fallback" | "closed"

export const singleBackend: BackendView = {
  kind: "local",
  state: "single",
  healthy: true,
  replicas: 1,
  replicaIds: [],
  replicaId: null,
  leader: true,
  limitKey: null,
  url: null,
  failureMode: null,
  lastError: null
}

/**
 * The rate seam: a token bucket refilled continuously at the rate its control law
 * (SIDECAR_RATE_CONTROL) sets from upstream answers. A shared (Redis) limiter replaces this service.
 */
export class RateLimiter extends Context.Tag("sidecar/RateLimiter")<RateLimiter, {
  /**
   * Waits on the Clock until a token is available (and any pause is over), then consumes it.
   * `priority` is the waiting request's: a shared limit serves the replicas' best waiter first.
   * Fails only while a shared limit is unreachable with SIDECAR_REDIS_FAILURE=closed.
   */
  readonly take: (priority?: Priority) => Effect.Effect<void, SharedLimitUnavailable>
  /** Takes a token only if one is available now (and dispatch is not paused). */
  readonly tryTake: (priority?: Priority) => Effect.Effect<boolean>
  /** A call went upstream: the law counts it (its `sentAt` is now). */
  readonly dispatched: Effect.Effect<number>
  /** Gives back the token of a call that never happened (sent at `sentAt`, if it was counted). */
  readonly refund: (sentAt?: number) => Effect.Effect<void>
  /** One upstream answer of the call sent at `sentAt`; `throttled` is a 429 that speaks of the rate. */
  readonly record: (outcome: "ok" | "throttled", sentAt: number, retryAfterMs?: number) => Effect.Effect<void>
  /** A 429 that is no rate signal (a concurrency cap): the call leaves the law's count. */
  readonly uncounted: (sentAt: number) => Effect.Effect<void>
  /** Holds dispatch until `millis` from now (upstream Retry-After). */
  readonly pauseFor: (millis: number) => Effect.Effect<void>
  /** Hot change; accrued tokens are kept (capped at the new capacity). */
  readonly configure: (change: { readonly rateRpm?: number; readonly capacity?: number }) => Effect.Effect<void>
  readonly snapshot: Effect.Effect<LimiterSnapshot>
  /** When a request could be admitted again, at least 1 s: the next token or the end of a pause. */
  readonly retryAfterMs: Effect.Effect<number>
}>() {
  static readonly layer = Layer.scoped(RateLimiter, Effect.flatMap(SidecarConfig, (config) => RateLimiter.make(config)))

  /** One in-process limiter: the single-process service, and a shared limit's fallback. */
  static readonly make = (config: Pick<SidecarConfigShape, "rateRpm" | "bucketCapacity" | "rateControl">) =>
    Effect.gen(function*() {
      // The clock is read through the captured service: cheaper per call, still the TestClock in tests.
      const clock = yield* Effect.clock
      const started = clock.unsafeCurrentTimeMillis()
      const law: ControlLaw = laws[config.rateControl](config.rateRpm, started)
      const state = yield* Ref.make<State>({
        tokens: config.bucketCapacity,
        capacity: config.bucketCapacity,
        baseRpm: config.rateRpm,
        updatedAt: started,
        pausedUntil: 0
      })

      // Every step reads the clock once and refills at the rate in force until now, so a law
      // that changes its rate never rewrites tokens already earned.
      const withNow = <A>(f: (s: State, now: number) => readonly [A, State]) =>
        Effect.suspend(() => {
          const now = clock.unsafeCurrentTimeMillis()
          return Ref.modify(state, (s) => f(refill(s, now, law), now))
        })
      // After the law moved: the bucket may hold no more than its burst allows.
      const capped = (s: State): State => ({ ...s, tokens: Math.min(s.tokens, burstLimit(s, law)) })

      // 0 = token consumed, otherwise millis until it is worth looking again.
      const tryTake = withNow((s, now) => {
        const resumeAt = Math.max(s.pausedUntil, law.dispatchAt(now))
        if (resumeAt > now) return [resumeAt - now, s] as const
        if (s.tokens >= 1) return [0, { ...s, tokens: s.tokens - 1 }] as const
        return [untilNextToken(s, law), s] as const
      })

      // A waiter sleeps until its token is due, or until a change makes it due sooner.
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

      // A waiter sleeps on the token time it computed at the old rate: when the law raises the
      // rate or lets dispatch resume sooner (within a mode too: ADR-009's recovery steps, the
      // learning law's probe doubling), it is woken to compute again.
      const sooner = (f: () => void, now: number) => {
        const rpm = law.effectiveRpm
        const resumeAt = law.dispatchAt(now)
        f()
        return law.effectiveRpm > rpm || law.dispatchAt(now) < resumeAt
      }

      const evaluate = Effect.flatMap(
        withNow((s, now) => {
          let change: ControlChange | undefined
          const faster = sooner(() => (change = law.evaluate(now)), now)
          return [{ change, faster }, capped(s)] as const
        }),
        ({ change, faster }) =>
          Effect.zipRight(
            change === undefined
              ? Effect.void
              : Effect.logInfo({ msg: "control_state_changed", law: config.rateControl, from: change.from, to: change.to, effective_rpm: round2(change.effectiveRpm), reason: change.reason }),
            change !== undefined || faster ? wake : Effect.void
          )
      )

      const snapshot = withNow((s, now): readonly [LimiterSnapshot, State] => {
        const view = law.view(now)
        return [{
          tokens: s.tokens,
          capacity: s.capacity,
          baseRpm: s.baseRpm,
          effectiveRpm: law.effectiveRpm,
          law: view.law,
          mode: view.mode,
          rate429: view.rate429,
          quotaEstimateRpm: view.quotaEstimateRpm,
          nextTokenInMs: s.tokens >= 1 ? 0 : untilNextToken(s, law),
          pausedForMs: Math.max(0, s.pausedUntil - now, law.dispatchAt(now) - now),
          backend: singleBackend
        }, s]
      })

      yield* evaluate.pipe(Effect.repeat(Schedule.spaced(Duration.millis(stepMs))), Effect.forkScoped)

      const tryTakeNow = Effect.map(tryTake, (wait) => wait === 0)
      return RateLimiter.of({
        take: () => take,
        tryTake: () => tryTakeNow,
        dispatched: withNow((s, now) => {
          law.dispatched(now)
          return [now, s] as const
        }),
        refund: (sentAt) =>
          Effect.zipRight(withNow((s) => {
            if (sentAt !== undefined) law.uncounted(sentAt)
            return [undefined, { ...s, tokens: Math.min(s.capacity, s.tokens + 1) }] as const
          }), wake),
        record: (outcome, sentAt, retryAfterMs) =>
          Effect.flatMap(
            withNow((s, now) => {
              const faster = sooner(() => law.record(outcome, now, retryAfterMs, sentAt), now)
              // A law may react to a 429 at once, between evaluation steps.
              return [faster, outcome === "throttled" ? capped(s) : s] as const
            }),
            (faster) => (faster ? wake : Effect.void)
          ),
        uncounted: (sentAt) => withNow((s) => [law.uncounted(sentAt), s] as const),
        pauseFor: (millis) => withNow((s, now) => [undefined, { ...s, pausedUntil: Math.max(s.pausedUntil, now + millis) }] as const),
        configure: (change) =>
          Effect.zipLeft(withNow((s, now) => {
            const capacity = change.capacity ?? s.capacity
            const baseRpm = change.rateRpm ?? s.baseRpm
            if (change.rateRpm !== undefined) law.rebase(baseRpm, now)
            return [undefined, { ...s, capacity, baseRpm, tokens: Math.min(capacity, s.tokens) }] as const
          }), wake),
        snapshot,
        retryAfterMs: Effect.map(snapshot, (b) => Math.max(1000, b.nextTokenInMs, b.pausedForMs))
      })
    })
}

interface State {
  readonly tokens: number
  readonly capacity: number
  readonly baseRpm: number
  readonly updatedAt: number
  readonly pausedUntil: number
}

const MINUTE_MS = 60_000
const round2 = (n: number) => Math.round(n * 100) / 100

function refill(s: State, now: number, law: ControlLaw): State {
  if (now <= s.updatedAt) return s
  const limit = burstLimit(s, law)
  if (s.tokens >= limit) return { ...s, updatedAt: now }
  const tokens = Math.min(limit, s.tokens + ((now - s.updatedAt) * law.effectiveRpm) / MINUTE_MS)
  // Refill arrives in slices (every evaluation step reads the state); snap float dust such as
  // 0.9999999999999999 so a token is due exactly on its boundary, not 1 ms later.
  const whole = Math.round(tokens)
  return { ...s, tokens: Math.abs(tokens - whole) < 1e-9 ? whole : tokens, updatedAt: now }
}

/** The most tokens the bucket may hold: its capacity, or less while the law keeps calls spaced. */
function burstLimit(s: State, law: ControlLaw): number {
  return Math.max(1, Math.min(s.capacity, law.burst))
}

function untilNextToken(s: State, law: ControlLaw): number {
  return Math.max(1, Math.ceil(((1 - s.tokens) * MINUTE_MS) / Math.max(law.effectiveRpm, 1e-9)))
}
