import { Clock, Context, Duration, Effect, FiberRef, Layer, LogLevel } from "effect"
import { RateLimited, type AdmissionError } from "../Common/Errors.js"
import { rank } from "../Common/Priority.js"
import { Metrics } from "../Observability/Metrics.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import { Inflight, ModelSlots } from "./Inflight.js"
import { type Claimed, firstArrival, makeJudge } from "./Judge.js"
import { type AdmissionRequest, isWaiting, type Permit, type UpstreamOutcome, type Verdict, type Waiting } from "./Permit.js"
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
  /** Admits now, or queues the request and hands back its fiber-free wait (the data path's way in). */
  readonly begin: (request: AdmissionRequest) => Effect.Effect<Permit | Waiting, AdmissionError>
  /** `begin`, then the wait as an interruptible effect: interrupting it leaves the queue. */
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

      const judge = makeJudge({ maxRetries: config.maxRetries, limiter, queue, modelSlots, decided: debug ? decided : undefined })

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

      // Queued: the ticket waits as plain data, no fiber; `restore` opens the bypass's waits to interruption.
      const waitInQueue = (request: Claimed, restore: Restore) =>
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
          return waiting(request, ticket)
        })

      const waiting = (request: Claimed, ticket: Ticket): Waiting => ({
        _tag: "Waiting",
        onSettled: (settled) => {
          const resume = (outcome: TicketOutcome) => settled(afterWait(request, ticket, outcome))
          if (ticket.outcome === undefined) ticket.resume = resume
          else resume(ticket.outcome)
        },
        leave: Effect.suspend(() => {
          ticket.resume = undefined
          return leave(ticket)
        })
      })

      const afterWait = (request: Claimed, ticket: Ticket, outcome: TicketOutcome): Effect.Effect<Permit, AdmissionError> =>
        Effect.gen(function*() {
          const waitedMs = (yield* Clock.currentTimeMillis) - ticket.enqueuedAt
          if (outcome._tag === "Admitted") return yield* permit(request, ticket.seq, waitedMs, false, outcome.release)
          if (outcome._tag === "Left") return yield* Effect.interrupt
          yield* decided(request, "refused", { seq: ticket.seq, reason: outcome.error._tag, waited_ms: waitedMs })
          if (outcome.error._tag === "RateLimited") {
            return yield* new RateLimited({ reason: outcome.error.reason, retryAfterMs: yield* limiter.retryAfterMs })
          }
          return yield* Effect.fail(outcome.error)
        })

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

      // The client is named, and its priority capped by its max_priority, before anything else;
      // a first attempt is stamped with its arrival.
      const claim = (request: AdmissionRequest, now: number) =>
        Effect.map(queue.client(request.clientId ?? UNIDENTIFIED), (client): Claimed => {
          const cap = client.limits.max_priority
          const priority = cap !== undefined && rank[request.priority] < rank[cap] ? cap : request.priority
          // Written out: a spread plus keys takes V8's slow path on a fresh object (~0.5 µs per key).
          return {
            priority,
            model: request.model,
            clientId: request.clientId,
            span: request.span,
            arrivedAt: request.retry === undefined && request.arrivedAt === undefined ? now : request.arrivedAt,
            retry: request.retry,
            claimed: request.priority,
            client
          }
        })

      const admit = (request: Claimed, restore: Restore): Effect.Effect<Permit | Waiting, AdmissionError> =>
        Effect.flatMap(admitNow(request), (now) => (now !== undefined ? Effect.succeed(now) : waitInQueue(request, restore)))

      // A model at its learned in-flight limit waits for room first, holding nothing else.
      // The queue timeout bounds the whole wait from the first arrival: model room, queue, retries.
      // Runs uninterruptibly but for the waits `restore` opens: a ticket queued is always handed back.
      const begin = (request: AdmissionRequest, restore: Restore): Effect.Effect<Permit | Waiting, AdmissionError> =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.gen(function*() {
            const claimed = yield* claim(request, now)
            const leaveModel = yield* restore(modelSlots.enter(claimed.model, firstArrival(claimed, now) + queueTimeoutMs))
            if (leaveModel === undefined) {
              yield* decided(claimed, "refused", { reason: "model_inflight_limit" })
              return yield* new RateLimited({ reason: "queue_timeout", retryAfterMs: yield* limiter.retryAfterMs })
            }
            const admitted = admit(claimed, restore)
            // No model room held (no model named): nothing to give back.
            if (leaveModel === Effect.void) return yield* admitted
            return yield* admitted.pipe(
              Effect.onError(() => leaveModel),
              Effect.map((a) => (isWaiting(a) ? holdingModel(a, leaveModel) : withModel(a, leaveModel)))
            )
          }))

      return Admission.of({
        begin: (request) => Effect.uninterruptibleMask((restore) => begin(request, restore)),
        acquire: (request) =>
          Effect.uninterruptibleMask((restore) =>
            Effect.flatMap(begin(request, restore), (admitted) =>
              isWaiting(admitted)
                ? restore(Effect.async<Permit, AdmissionError>((resume) => admitted.onSettled(resume))).pipe(Effect.onInterrupt(() => admitted.leave))
                : Effect.succeed(admitted))
          )
      })
    })
  )
}

type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/** The model's room is given back with the permit's finish, or when the request never gets one. */
const withModel = (p: Permit, leaveModel: Effect.Effect<void>): Permit => ({
  seq: p.seq,
  attempt: p.attempt,
  waitedMs: p.waitedMs,
  bypassed: p.bypassed,
  priority: p.priority,
  clientId: p.clientId,
  limits: p.limits,
  mustConsult: p.mustConsult,
  finish: (outcome) => Effect.zipLeft(p.finish(outcome), leaveModel)
})
const holdingModel = (w: Waiting, leaveModel: Effect.Effect<void>): Waiting => ({
  _tag: "Waiting",
  onSettled: (settled) =>
    w.onSettled((rest) => settled(rest.pipe(Effect.onError(() => leaveModel), Effect.map((p) => withModel(p, leaveModel))))),
  leave: Effect.zipRight(w.leave, leaveModel)
})

/** The client of a request that names none (tests, internal callers). */
const UNIDENTIFIED = "(unidentified)"

const left: TicketOutcome = { _tag: "Left" }
const mustConsult = (status: number) => status === 429
