import type { Priority } from "./Clients.js"

/** What a run leaves behind: the engine writes it, Report reads it. Times are ms from the start. */
export interface Trace {
  readonly requests: ReadonlyArray<RequestRecord>
  readonly attempts: ReadonlyArray<AttemptRecord>
  /** The effective rate as a step function: one point per change. */
  readonly rate: ReadonlyArray<RatePoint>
  /** Learned per-model in-flight limits over time, one point per change. */
  readonly inflightLimit: ReadonlyArray<{ readonly at: number; readonly model: string; readonly limit: number | undefined }>
  /** Dispatches made while an upstream Retry-After was still running (must be 0). */
  readonly sentDuringRetryAfter: number
  /** Longest time with requests queued and nothing dispatched (ms). */
  readonly longestStall: number
}

export interface RequestRecord {
  readonly priority: Priority
  readonly arrivedAt: number
  /** ok = upstream answered; relayed429 = the client saw an upstream 429 after the retries; timeout = the client gave up while queued. */
  readonly outcome: "ok" | "relayed429" | "timeout" | "pending"
  readonly queueMs: number
}

export interface AttemptRecord {
  /** When the upstream saw it. */
  readonly at: number
  readonly status: 200 | 429
  readonly kind: "ok" | "quota" | "cap" | "spurious"
}

export interface RatePoint {
  readonly at: number
  readonly rpm: number
  readonly mode: string
  readonly estimate: number | null
}
