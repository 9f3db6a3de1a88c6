import { Clock, Context, Duration, Effect, FiberRef, Layer, LogLevel, Option } from "effect"
import { RateLimited, type AdmissionError } from "../Common/Errors.js"
import { rank, type Priority } from "../Common/Priority.js"
import { retryAfterHeaders, retryAfterMillis } from "../Common/ErrorResponse.js"
import { Metrics } from "../Observability/Metrics.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import { Inflight, ModelSlots } from "./Inflight.js"
import { concurrencySignal } from "./Laws/ConcurrencyCap.js"
import type { AdmissionRequest, Permit, UpstreamOutcome, Verdict } from "./Permit.js"
import { PriorityQueue } from "./PriorityQueue.js"
import { RateLimiter } from "./RateLimiter.js"
import type { ClientState } from "./ClientTable.js"
import { makeTicket, type Ticket, type TicketOutcome } from "./Ticket.js"

/**
 * Every decision about calling the limited upstream: `acquire` waits (queue, in-flight slot,
 * token) until a request may call, `permit.finish` feeds the answer back (bucket feedback, slot
 * release, Retry-After pause) and rules whether the answer is delivered or retried.
 */
export class Admission extends Context.Tag("sidecar/Admission")<Admission, {
  readonly acquire: (request: AdmissionRequest) => Effect.Effect<Permit, AdmissionError>
}>() {
  static readonly layer = Layer.effect(
    Admission,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const queue = yield* PriorityQueue
      const limiter = yield* RateLimiter
      const inflight = yield* Inflight
      const modelSlots = yield* ModelSlots
      const metrics = yield* Metrics
      const queueTimeoutMs = Duration.toMillis(config.queueTimeout)
      // Arrival order within a level; a plain counter since taking a number cannot interleave.
      let lastSeq = 0

      // DEBUG shows every decision; the level is fixed at start-up, so INFO pays nothing for it.
      const debug = LogLevel.lessThanEqual(yield* FiberRef.get(FiberRef.currentMinimumLogLevel), LogLevel.Debug)
      const decided = (request: Claimed, decision: string, fields: Record<string, unknown>) =>
        debug
          ? Effect.logDebug({
            msg: "admission",
            decision,
            client: request.client.id,
            priority: request.priority,
            ...(request.priority === request.claimed ? {} : { claimed: request.claimed }),
            model: request.model ?? null,
            attempt: request.retry?.attempt ?? 0,
            ...fields
          })
          : Effect.void

      const permit = (request: Claimed, seq: number, waitedMs: number, bypassed: boolean, release: Effect.Effect<void>) =>
        Effect.gen(function*() {
          const attempt = request.retry?.attempt ?? 0
          yield* decided(request, waitedMs === 0 && !bypassed ? "immediate" : bypassed ? "bypassed_full_queue" : "dequeued", { seq, waited_ms: waitedMs })
          yield* metrics.queueWait(request.priority, waitedMs / 1000)
          const limits = yield* limiter.snapshot
          // The call goes upstream now: the law counts it from here.
          const sentAt = yield* limiter.dispatched
          const finish = (outcome: UpstreamOutcome): Effect.Effect<Verdict> =>
            Effect.zipLeft(judge(request, seq, attempt, sentAt, outcome), release)
          return { seq, attempt, waitedMs, bypassed, limits, priority: request.priority, clientId: request.client.id, mustConsult, finish } satisfies Permit
        })

      const judge = (request: Claimed, seq: number, attempt: number, sentAt: number, outcome: UpstreamOutcome): Effect.Effect<Verdict> =>
        Effect.gen(function*() {
          if (outcome._tag === "NotSent") {
            yield* limiter.refund(sentAt)
            yield* queue.refund(request.client)
            return deliver
          }
          // No answer: the call stays counted, the safe side.
          if (outcome._tag === "Failed") return deliver
          if (outcome.status !== 429) {
            yield* limiter.record("ok", sentAt)
            yield* modelSlots.answered(request.model)
            return deliver
          }
          // A model's workers are full: a concurrency signal, not a rate signal. The model's
          // in-flight limit is learned; the rate and the law's count are left alone.
          const cap = concurrencySignal(outcome.body ?? "")
          if (cap !== undefined) {
            yield* limiter.uncounted(sentAt)
            yield* modelSlots.capped(request.model, cap.limit)
            if (debug) yield* decided(request, "concurrency_capped", { seq, stated_limit: cap.limit ?? null })
          } else {
            // An upstream 429 before any byte reached the client: the law hears of it, a
            // Retry-After pauses dispatch, and the request retries with its seq while retries last.
            const pause = retryAfterMillis(outcome.retryAfter, yield* Clock.currentTimeMillis)
            yield* limiter.record("throttled", sentAt, Option.getOrUndefined(pause))
            if (Option.isSome(pause)) yield* limiter.pauseFor(pause.value)
          }
          if (attempt < config.maxRetries) {
            const arrivedAt = firstArrival(request, yield* Clock.currentTimeMillis)
            const next: AdmissionRequest = { priority: request.claimed, model: request.model, clientId: request.clientId, span: request.span }
            return { _tag: "Retry", next: { ...next, retry: { seq, attempt: attempt + 1, arrivedAt } } } as const
          }
          // The sidecar already retried: a client's own retries would only multiply the calls.
          const headers = retryAfterHeaders(yield* limiter.retryAfterMs)
          return { _tag: "Deliver", headers: config.maxRetries > 0 ? { ...headers, "x-should-retry": "false" } : headers } as const
        })

      // An idle queue, a free slot and a token at hand admit at once: no ticket, no dispatcher.
      const admitNow = (request: Claimed) =>
        Effect.gen(function*() {
          if (!(yield* queue.idle(request.client))) return undefined
          const release = yield* inflight.tryAcquire
          if (release === undefined) return undefined
          if (!(yield* limiter.tryTake(request.priority))) {
            yield* release
            return undefined
          }
          yield* queue.charge(request.client)
          return yield* permit(request, request.retry?.seq ?? ++lastSeq, 0, false, release)
        })

      const waitInQueue = (request: Claimed) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            const ticket = makeTicket({
              seq: request.retry?.seq ?? ++lastSeq,
              priority: request.priority,
              client: request.client,
              model: request.model,
              enqueuedAt: now,
              deadline: firstArrival(request, now) + queueTimeoutMs,
              span: request.span
            })
            const placement = yield* queue.offer(ticket).pipe(
              Effect.tapError((error) => decided(request, "refused", { reason: error._tag === "RateLimited" ? error.reason : error._tag })),
              Effect.catchTag("RateLimited", (error) => Effect.flatMap(clientRetryAfterMs(request.client), (retryAfterMs) => new RateLimited({ reason: error.reason, retryAfterMs })))
            )
            if (debug) yield* decided(request, placement, { seq: ticket.seq, depth: (yield* queue.snapshot).size })
            if (placement === "bypass") return yield* restore(bypass(request, ticket))
            const outcome = yield* restore(awaitTicket(ticket)).pipe(Effect.onInterrupt(() => leave(ticket)))
            const waitedMs = (yield* Clock.currentTimeMillis) - now
            if (outcome._tag === "Admitted") return yield* permit(request, ticket.seq, waitedMs, false, outcome.release)
            if (outcome._tag === "Left") return yield* Effect.interrupt
            yield* decided(request, "refused", { seq: ticket.seq, reason: outcome.error._tag, waited_ms: waitedMs })
            if (outcome.error._tag === "RateLimited") {
              return yield* new RateLimited({ reason: outcome.error.reason, retryAfterMs: yield* limiter.retryAfterMs })
            }
            return yield* Effect.fail(outcome.error)
          })
        )

      // Skips a full queue, not the limits: it still needs a slot and a token before its deadline.
      const bypass = (request: Claimed, ticket: Ticket) =>
        Effect.gen(function*() {
          yield* queue.countBypass
          yield* metrics.fallbackPassthrough
          const left = () => Effect.map(Clock.currentTimeMillis, (now) => Duration.millis(Math.max(0, ticket.deadline - now)))
          const tokenTimeout = new RateLimited({ reason: "token_timeout", retryAfterMs: 1000 })
          const release = yield* inflight.acquireWithin(yield* left())
          if (release === undefined) return yield* tokenTimeout
          yield* limiter.take(request.priority).pipe(
            Effect.timeoutFail({ duration: yield* left(), onTimeout: () => tokenTimeout }),
            Effect.onError(() => release)
          )
          const waitedMs = (yield* Clock.currentTimeMillis) - ticket.enqueuedAt
          yield* queue.charge(request.client)
          return yield* permit(request, ticket.seq, waitedMs, true, release)
        })

      // The waiter left. Still queued: it leaves the queue. Admitted meanwhile: slot and tokens go back.
      const leave = (ticket: Ticket) =>
        Effect.flatMap(queue.settle(ticket, left), (wasWaiting) => {
          const outcome = ticket.outcome
          return wasWaiting || outcome?._tag !== "Admitted"
            ? Effect.void
            : Effect.all([outcome.release, limiter.refund(), queue.refund(ticket.client)], { discard: true })
        })

      // A full share frees up no sooner than the next token, the client's own or the key's.
      const clientRetryAfterMs = (client: ClientState) =>
        Effect.zipWith(limiter.retryAfterMs, queue.clientWaitMs(client), Math.max)

      // The client is named, and its priority capped by its max_priority, before anything else.
      const claim = (request: AdmissionRequest) =>
        Effect.map(queue.client(request.clientId ?? UNIDENTIFIED), (client): Claimed => {
          const cap = client.limits.max_priority
          const priority = cap !== undefined && rank[request.priority] < rank[cap] ? cap : request.priority
          return { ...request, priority, claimed: request.priority, client }
        })

      const admit = (request: Claimed) =>
        Effect.flatMap(admitNow(request), (now) => (now !== undefined ? Effect.succeed(now) : waitInQueue(request)))

      return Admission.of({
        // A model at its learned in-flight limit waits for room first, holding nothing else.
        // The queue timeout bounds the whole wait from the first arrival: model room, queue, retries.
        acquire: (request) =>
          Effect.flatMap(claim(request), (claimed) =>
            Effect.uninterruptibleMask((restore) =>
              Effect.gen(function*() {
                const now = yield* Clock.currentTimeMillis
                const stamped: Claimed = claimed.retry === undefined && claimed.arrivedAt === undefined ? { ...claimed, arrivedAt: now } : claimed
                const leaveModel = yield* restore(modelSlots.enter(stamped.model, firstArrival(stamped, now) + queueTimeoutMs))
                if (leaveModel === undefined) {
                  yield* decided(stamped, "refused", { reason: "model_inflight_limit" })
                  return yield* new RateLimited({ reason: "queue_timeout", retryAfterMs: yield* limiter.retryAfterMs })
                }
                return yield* restore(admit(stamped)).pipe(
                  Effect.onError(() => leaveModel),
                  Effect.map((p): Permit => ({ ...p, finish: (outcome) => Effect.zipLeft(p.finish(outcome), leaveModel) }))
                )
              })
            ))
      })
    })
  )
}

/** A request with its client resolved; `priority` is what it is served at, `claimed` what it asked for. */
interface Claimed extends AdmissionRequest {
  readonly claimed: Priority
  readonly client: ClientState
}

/** The client of a request that names none (tests, internal callers). */
const UNIDENTIFIED = "(unidentified)"

const deliver: Verdict = { _tag: "Deliver", headers: {} }
/** When the request (its first attempt, for a retry) reached admission. */
const firstArrival = (request: AdmissionRequest, now: number) => request.retry?.arrivedAt ?? request.arrivedAt ?? now
const left: TicketOutcome = { _tag: "Left" }
const mustConsult = (status: number) => status === 429

/** Suspends until the ticket is settled; no fiber, timer or Deferred of its own. */
const awaitTicket = (ticket: Ticket): Effect.Effect<TicketOutcome> =>
  Effect.async<TicketOutcome>((resume) => {
    if (ticket.outcome !== undefined) return resume(Effect.succeed(ticket.outcome))
    ticket.resume = (outcome) => resume(Effect.succeed(outcome))
  })
