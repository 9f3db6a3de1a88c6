import { Clock, Context, Duration, Effect, FiberRef, Layer, LogLevel } from "effect"
import { RateLimited, type AdmissionError } from "../Common/Errors.js"
import { rank } from "../Common/Priority.js"
import { Metrics } from "../Observability/Metrics.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import { Inflight, ModelSlots } from "./Inflight.js"
import { type Claimed, firstArrival, makeJudge } from "./Judge.js"
import { type AdmissionRequest, isWaiting, type Permit, type Waiting } from "./Permit.js"
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

      // Plain combinators, no generator: this runs once per admission.
      const permit = (request: Claimed, seq: number, waitedMs: number, bypassed: boolean, release: Effect.Effect<void>): Effect.Effect<Permit> => {
        const attempt = request.retry?.attempt ?? 0
        const noted = Effect.zipRight(
          decided(request, waitedMs === 0 && !bypassed ? "immediate" : bypassed ? "bypassed_full_queue" : "dequeued", { seq, waited_ms: waitedMs }),
          metrics.queueWait(request.priority, waitedMs / 1000)
        )
        return Effect.flatMap(Effect.zipRight(noted, limiter.snapshot), (limits) =>
          // The call goes upstream now: the law counts it from here.
          Effect.map(limiter.dispatched, (sentAt): Permit => ({
            seq,
            attempt,
            waitedMs,
            bypassed,
            limits,
            priority: request.priority,
            clientId: request.client.id,
            mustConsult,
            finish: (outcome) => Effect.zipLeft(judge(request, seq, attempt, sentAt, outcome), release)
          })))
      }

      const judge = makeJudge({ maxRetries: config.maxRetries, limiter, queue, modelSlots, decided: debug ? decided : undefined })

      // An idle queue, a free slot and a token at hand admit at once: no ticket, no dispatcher.
      const admitNow = (request: Claimed): Effect.Effect<Permit | undefined> =>
        Effect.flatMap(queue.idle(request.client), (idle) =>
          !idle ? notNow : Effect.flatMap(inflight.tryAcquire, (release) =>
            release === undefined ? notNow : Effect.flatMap(limiter.tryTake(request.priority), (took) =>
              !took
                ? Effect.as(release, undefined)
                : Effect.flatMap(queue.charge(request.client), () => permit(request, request.retry?.seq ?? ++lastSeq, 0, false, release)))))

      // Queued: the ticket waits as plain data, no fiber; `restore` opens the bypass's waits to interruption.
      const waitInQueue = (request: Claimed, restore: Restore): Effect.Effect<Permit | Waiting, AdmissionError> =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const ticket = makeTicket({
            seq: request.retry?.seq ?? ++lastSeq,
            priority: request.priority,
            client: request.client,
            model: request.model,
            enqueuedAt: now,
            deadline: firstArrival(request, now) + queueTimeoutMs,
            span: request.span
          })
          const offered = queue.offer(ticket).pipe(
            Effect.tapError((error) => decided(request, "refused", { reason: error._tag === "RateLimited" ? error.reason : error._tag })),
            Effect.catchTag("RateLimited", (error) => Effect.flatMap(clientRetryAfterMs(request.client), (retryAfterMs) => new RateLimited({ reason: error.reason, retryAfterMs })))
          )
          return Effect.flatMap(offered, (placement): Effect.Effect<Permit | Waiting, AdmissionError> => {
            const placed: Effect.Effect<Permit | Waiting, AdmissionError> = placement === "bypass" ? restore(bypass(request, ticket)) : Effect.succeed(waiting(request, ticket))
            return debug ? Effect.zipRight(Effect.flatMap(queue.snapshot, (q) => decided(request, placement, { seq: ticket.seq, depth: q.size })), placed) : placed
          })
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
        Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<Permit, AdmissionError> => {
          const waitedMs = now - ticket.enqueuedAt
          if (outcome._tag === "Admitted") return permit(request, ticket.seq, waitedMs, false, outcome.release)
          if (outcome._tag === "Left") return Effect.interrupt
          const error = outcome.error
          const refused: Effect.Effect<never, AdmissionError> = error._tag === "RateLimited"
            ? Effect.flatMap(limiter.retryAfterMs, (retryAfterMs) => Effect.fail(new RateLimited({ reason: error.reason, retryAfterMs })))
            : Effect.fail(error)
          return Effect.zipRight(decided(request, "refused", { seq: ticket.seq, reason: error._tag, waited_ms: waitedMs }), refused)
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
          Effect.flatMap(claim(request, now), (claimed) =>
            Effect.flatMap(restore(modelSlots.enter(claimed.model, firstArrival(claimed, now) + queueTimeoutMs)), (leaveModel) => {
              if (leaveModel === undefined) {
                return Effect.zipRight(
                  decided(claimed, "refused", { reason: "model_inflight_limit" }),
                  Effect.flatMap(limiter.retryAfterMs, (retryAfterMs) => Effect.fail(new RateLimited({ reason: "queue_timeout", retryAfterMs })))
                )
              }
              const admitted = admit(claimed, restore)
              // No model room held (no model named): nothing to give back.
              if (leaveModel === Effect.void) return admitted
              return admitted.pipe(
                Effect.onError(() => leaveModel),
                Effect.map((a) => (isWaiting(a) ? holdingModel(a, leaveModel) : withModel(a, leaveModel)))
              )
            })))

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
const notNow: Effect.Effect<undefined> = Effect.succeed(undefined)
const mustConsult = (status: number) => status === 429
