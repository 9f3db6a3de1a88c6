import type { Effect, Tracer } from "effect"
import type { AdmissionError } from "../Common/Errors.js"
import type { Priority } from "../Common/Priority.js"
import type { LimiterSnapshot } from "./RateLimiter.js"

/** What the data path tells admission about a request that wants to spend the key's quota. */
export interface AdmissionRequest {
  readonly priority: Priority
  readonly model: string | undefined
  /**
   * Who is asking (ClientIdentity): requests of one level are served round-robin across clients,
   * and a client's own limits apply. Unset: one shared anonymous client.
   */
  readonly clientId?: string | undefined
  /** The span the queue and token waits are charged to. */
  readonly span?: Tracer.AnySpan | undefined
  /** When it reached admission; `acquire` sets it. The queue timeout counts from here. */
  readonly arrivedAt?: number | undefined
  /** Set on a retry: it keeps its place ahead of newer requests, and its total wait is bounded. */
  readonly retry?: RetryState | undefined
}

export interface RetryState {
  readonly seq: number
  readonly attempt: number
  /** When the first attempt arrived: the queue timeout bounds the total wait. */
  readonly arrivedAt: number
}

/** Leave to call upstream once. `finish` must run exactly once per permit. */
export interface Permit {
  readonly seq: number
  /** 0 for the first call, 1 for the first retry, ... */
  readonly attempt: number
  /** Time this attempt spent waiting for admission. */
  readonly waitedMs: number
  /** The queue was full and the policy let the request skip it (it still took a token). */
  readonly bypassed: boolean
  /** The priority it was served at: the claimed one, lowered to its client's max_priority. */
  readonly priority: Priority
  /** The client it was counted against (the overflow client once SIDECAR_MAX_CLIENTS are tracked). */
  readonly clientId: string
  /** Bucket state at admission, for the rate-limit response headers. */
  readonly limits: LimiterSnapshot
  /**
   * Upstream statuses that may not reach the client before `finish` rules on them (their body
   * is small and must be held): today, 429.
   */
  readonly mustConsult: (status: number) => boolean
  readonly finish: (outcome: UpstreamOutcome) => Effect.Effect<Verdict>
}

export type UpstreamOutcome =
  /** The upstream answered; `body` is given for consulted statuses only. */
  | { readonly _tag: "Answered"; readonly status: number; readonly retryAfter: string | undefined; readonly body: string | undefined }
  /** The call was made and got no HTTP answer (reset, timeout). */
  | { readonly _tag: "Failed" }
  /** The call never happened (the client left first): the token goes back. */
  | { readonly _tag: "NotSent" }

export type Verdict =
  /** Relay the answer, with these headers added (a final 429's Retry-After, for one). */
  | { readonly _tag: "Deliver"; readonly headers: Readonly<Record<string, string>> }
  /** Drop the answer and acquire again with `next`. */
  | { readonly _tag: "Retry"; readonly next: AdmissionRequest }

/**
 * A request waiting in the queue, with no fiber of its own: whoever settles its ticket calls
 * `onSettled` back at once, with the effect that completes the admission (run it right away).
 */
export interface Waiting {
  readonly _tag: "Waiting"
  /** Registers the one callback; called synchronously by the settling code, or now if settled. */
  readonly onSettled: (settled: (rest: Effect.Effect<Permit, AdmissionError>) => void) => void
  /** The waiter left: its ticket leaves the queue (admitted meanwhile: slot and tokens go back). No callback follows. */
  readonly leave: Effect.Effect<void>
}

export const isWaiting = (admitted: Permit | Waiting): admitted is Waiting => "onSettled" in admitted
