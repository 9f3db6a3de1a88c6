import { Clock, Effect, Option } from "effect"
import { retryAfterHeaders, retryAfterMillis } from "../Common/ErrorResponse.js"
import type { Priority } from "../Common/Priority.js"
import type { ClientState } from "./ClientTable.js"
import type { ModelSlots } from "./Inflight.js"
import { concurrencySignal } from "./Laws/ConcurrencyCap.js"
import type { AdmissionRequest, UpstreamOutcome, Verdict } from "./Permit.js"
import type { PriorityQueue } from "./PriorityQueue.js"
import type { RateLimiter } from "./RateLimiter.js"

/** A request with its client resolved; `priority` is what it is served at, `claimed` what it asked for. */
export interface Claimed extends AdmissionRequest {
  readonly claimed: Priority
  readonly client: ClientState
}

export interface JudgeDeps {
  readonly maxRetries: number
  readonly limiter: RateLimiter["Type"]
  readonly queue: PriorityQueue["Type"]
  readonly modelSlots: ModelSlots["Type"]
  /** The DEBUG decision log, when on. */
  readonly decided: ((request: Claimed, decision: string, fields: Record<string, unknown>) => Effect.Effect<void>) | undefined
}

/**
 * What an upstream answer means for admission (a permit's `finish`): bucket and law feedback,
 * learned model limits, a Retry-After pause, and whether the answer is delivered or retried.
 */
export const makeJudge = ({ maxRetries, limiter, queue, modelSlots, decided }: JudgeDeps) => {
  // The common answers take plain combinators; only a 429 takes the generator below.
  const judge = (request: Claimed, seq: number, attempt: number, sentAt: number, outcome: UpstreamOutcome): Effect.Effect<Verdict> => {
    if (outcome._tag === "NotSent") return Effect.as(Effect.zipRight(limiter.refund(sentAt), queue.refund(request.client)), deliver)
    // No answer: the call stays counted, the safe side.
    if (outcome._tag === "Failed") return delivered
    if (outcome.status !== 429) return Effect.as(Effect.zipRight(limiter.record("ok", sentAt), modelSlots.answered(request.model)), deliver)
    return throttled(request, seq, attempt, sentAt, outcome)
  }

  const throttled = (request: Claimed, seq: number, attempt: number, sentAt: number, outcome: Answered): Effect.Effect<Verdict> =>
    Effect.gen(function*() {
      // A model's workers are full: a concurrency signal, not a rate signal. The model's
      // in-flight limit is learned; the rate and the law's count are left alone.
      const cap = concurrencySignal(outcome.body ?? "")
      if (cap !== undefined) {
        yield* limiter.uncounted(sentAt)
        yield* modelSlots.capped(request.model, cap.limit)
        if (decided !== undefined) yield* decided(request, "concurrency_capped", { seq, stated_limit: cap.limit ?? null })
      } else {
        // An upstream 429 before any byte reached the client: the law hears of it, a
        // Retry-After pauses dispatch, and the request retries with its seq while retries last.
        const pause = retryAfterMillis(outcome.retryAfter, yield* Clock.currentTimeMillis)
        yield* limiter.record("throttled", sentAt, Option.getOrUndefined(pause))
        if (Option.isSome(pause)) yield* limiter.pauseFor(pause.value)
      }
      if (attempt < maxRetries) {
        const arrivedAt = firstArrival(request, yield* Clock.currentTimeMillis)
        const next: AdmissionRequest = { priority: request.claimed, model: request.model, clientId: request.clientId, span: request.span }
        return { _tag: "Retry", next: { ...next, retry: { seq, attempt: attempt + 1, arrivedAt } } } as const
      }
      // The sidecar already retried: a client's own retries would only multiply the calls.
      const headers = retryAfterHeaders(yield* limiter.retryAfterMs)
      return { _tag: "Deliver", headers: maxRetries > 0 ? { ...headers, "x-should-retry": "false" } : headers } as const
    })

  return judge
}

/** When the request (its first attempt, for a retry) reached admission. */
export const firstArrival = (request: AdmissionRequest, now: number) => request.retry?.arrivedAt ?? request.arrivedAt ?? now

const deliver: Verdict = { _tag: "Deliver", headers: {} }
const delivered: Effect.Effect<Verdict> = Effect.succeed(deliver)

type Answered = Extract<UpstreamOutcome, { readonly _tag: "Answered" }>
