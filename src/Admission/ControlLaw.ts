/**
 * The rate limiter's pluggable control law: it turns upstream answers into the rate the token
 * bucket refills at. Pure TS; time is a millisecond number handed in by the caller (who reads
 * Effect's Clock), so a law is deterministic and testable with plain numbers.
 */
export type ControlLawName = "adr009" | "learning"

/** adr009: "normal" | "retreat" | "recover"; learning: "open" | "hold" | "probe" (see Laws/Learning.ts). */
export type ControlMode = string

export interface ControlView {
  readonly law: ControlLawName
  readonly mode: ControlMode
  /** The configured rate: a ceiling, never exceeded. */
  readonly baseRpm: number
  readonly effectiveRpm: number
  /** 429 share of answers over the last 60 s. */
  readonly rate429: number
  /** Learned quota, null when none yet. */
  readonly quotaEstimateRpm: number | null
}

/** A change of control state, for the one log line per change. */
export interface ControlChange {
  readonly from: ControlMode
  readonly to: ControlMode
  readonly effectiveRpm: number
  readonly reason: string
}

/**
 * Mutable by design: `record` runs on every upstream answer, so it must be O(1) and allocation-free.
 *
 * Members beyond the first draft (see sim/README.md): `dispatched`, `uncounted`, the `sentAt` of
 * `record`, `dispatchAt` and `burst`. The limiter asks `dispatchAt` before it sends a call, calls
 * `dispatched` when the call goes upstream, and reads `effectiveRpm` and `burst` after every
 * `evaluate` and every `record("throttled", …)` (a law may react to a 429 at once, between steps).
 */
export interface ControlLaw {
  /** One upstream answer of the limited upstream: ok (any non-429 HTTP answer) or throttled (429 that is a rate signal). `retryAfterMs` when the 429 carried Retry-After; `sentAt` when that call was dispatched. */
  record(outcome: "ok" | "throttled", now: number, retryAfterMs?: number, sentAt?: number): void
  /** Runs every `stepMs`; returns the change of mode, if any. */
  evaluate(now: number): ControlChange | undefined
  /** Hot change of the configured rate (admin API). */
  rebase(baseRpm: number, now: number): void
  readonly effectiveRpm: number
  /** A call went to the limited upstream at `now` (its `sentAt` later). */
  dispatched(now: number): void
  /** The call sent at `sentAt` got a 429 that is no rate signal (a concurrency cap): the quota did not count it. */
  uncounted(sentAt: number): void
  /** Earliest time the next call may be dispatched by the law's own rules (`now` when free); Retry-After pauses stay in the bucket. */
  dispatchAt(now: number): number
  /** The most tokens the bucket may hold now; Infinity leaves the configured capacity alone. */
  readonly burst: number
  view(now: number): ControlView
  /** What the law has learned, as JSON: a shared limit's next leader restores it and continues. */
  save(): string
  /** Continues from `save()` of the same law; anything else it cannot read is left as it is. The configured rate stays this law's own. */
  restore(state: string): void
}

export const stepMs = 5_000

export type MakeControlLaw = (baseRpm: number, now: number) => ControlLaw
