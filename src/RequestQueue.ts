import { Clock, Context, Deferred, Duration, Effect, Exit, Layer, Option, Order, Ref, STM, TPriorityQueue, TRef, Tracer } from "effect"
import { Evicted, InvalidPatch, QueueFull, RateLimited, ShuttingDown, type AdmissionError } from "./Errors.js"
import { Metrics } from "./Metrics.js"
import { rank, type Priority } from "./Priority.js"
import type { QueueFullPolicy } from "./SidecarConfig.js"
import { SidecarConfig } from "./SidecarConfig.js"
import { makeSlots, type Slots } from "./Slots.js"
import { TokenBucket } from "./TokenBucket.js"

/** Handed to a request when it may call upstream; `release` frees its in-flight slot. */
export interface Admission {
  readonly release: Effect.Effect<void>
}

export interface Admitted extends Admission {
  readonly waitedMs: number
  /** Keep it for a retry: the same seq sorts ahead of newer requests of the level. */
  readonly seq: number
  /** Queue was full and the policy let the request skip it (it still took a token). */
  readonly bypassed: boolean
}

export interface Ticket {
  readonly seq: number
  readonly priority: Priority
  readonly enqueuedAt: number
  readonly admitted: Deferred.Deferred<Admission, AdmissionError>
  /** The waiter's span, so the dispatcher's token wait shows up in its trace. */
  readonly span: Option.Option<Tracer.AnySpan>
}

export interface QueueSettings {
  readonly max: number
  readonly policy: QueueFullPolicy
  readonly lowTimeout: Duration.Duration
}

export interface QueueSnapshot extends QueueSettings {
  readonly size: number
  readonly byPriority: Readonly<Record<Priority, number>>
  readonly enqueued: number
  readonly dequeued: number
  readonly dropped: number
  readonly timedOut: number
  readonly bypassed: number
  readonly inflight: number
}

/** Bounded 4-level priority queue (STM), FIFO within a level, and the in-flight slots. */
export class RequestQueue extends Context.Tag("sidecar/RequestQueue")<RequestQueue, {
  /** Admits at once when nobody waits, a slot is free and a token is at hand; never waits. */
  readonly admitNow: (seq?: number) => Effect.Effect<Option.Option<Admitted>>
  /** Waits until the dispatcher admits this request, within the queue timeout (tries `admitNow` first). */
  readonly admit: (priority: Priority, seq?: number) => Effect.Effect<Admitted, AdmissionError>
  /** In-flight slots (SIDECAR_MAX_INFLIGHT): the dispatcher takes one per admission. */
  readonly slots: Slots
  /** Blocks until a request is waiting; returns the best one without removing it. */
  readonly head: Effect.Effect<Ticket>
  /** Completes once `ticket` is no longer the best waiting request. */
  readonly headChanged: (ticket: Ticket) => Effect.Effect<void>
  /** Blocks until a request is waiting; removes and returns the best one. */
  readonly next: Effect.Effect<Ticket>
  /** Fails a waiting low-priority request that found no token in time. */
  readonly expireLow: (ticket: Ticket) => Effect.Effect<void>
  /** Answers every waiting request 503 and refuses new ones (shutdown). */
  readonly close: Effect.Effect<void>
  readonly settings: Effect.Effect<QueueSettings>
  readonly configure: (change: Partial<QueueSettings>) => Effect.Effect<void, InvalidPatch>
  readonly snapshot: Effect.Effect<QueueSnapshot>
}>() {
  static readonly layer = Layer.effect(
    RequestQueue,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const bucket = yield* TokenBucket
      const metrics = yield* Metrics
      const queue = yield* TPriorityQueue.empty<Ticket>(byRankThenSeq)
      const closed = yield* TRef.make(false)
      const slots = yield* makeSlots(config.maxInflight)
      // Nobody waits and a slot is free: the newcomer is the best request by definition.
      const idle = STM.commit(STM.map(STM.zip(TRef.get(closed), TPriorityQueue.isEmpty(queue)), ([isClosed, empty]) => !isClosed && empty))
      const settings = yield* Ref.make<QueueSettings>({
        max: config.queueMax,
        policy: config.queueFullPolicy,
        lowTimeout: config.lowTimeout
      })
      const counters = yield* Ref.make({ enqueued: 0, dequeued: 0, dropped: 0, timedOut: 0, bypassed: 0 })
      // Arrival order within a level; a plain counter since taking a number cannot interleave.
      let lastSeq = 0
      const nextSeq = Effect.sync(() => ++lastSeq)
      const count = (key: "enqueued" | "dequeued" | "dropped" | "timedOut" | "bypassed") =>
        Ref.update(counters, (c) => ({ ...c, [key]: c[key] + 1 }))

      const offer = (ticket: Ticket, s: QueueSettings): STM.STM<Offered, QueueFull | ShuttingDown> =>
        STM.gen(function*() {
          if (yield* TRef.get(closed)) return yield* STM.fail(new ShuttingDown())
          if ((yield* TPriorityQueue.size(queue)) < s.max) {
            yield* TPriorityQueue.offer(queue, ticket)
            return { _tag: "Queued" } as const
          }
          if (s.policy === "passthrough") return { _tag: "Bypass" } as const
          if (s.policy === "drop_lowest") {
            const victim = lowest(yield* TPriorityQueue.toArray(queue))
            if (victim !== undefined && rank[victim.priority] > rank[ticket.priority]) {
              yield* TPriorityQueue.removeIf(queue, (t) => t === victim)
              yield* TPriorityQueue.offer(queue, ticket)
              return { _tag: "Evicted", victim } as const
            }
          }
          return yield* STM.fail(new QueueFull({ capacity: s.max }))
        })

      const retryAfterMs = Effect.map(bucket.snapshot, (b) => Math.max(1000, b.nextTokenInMs, b.pausedForMs))

      // Called when the waiter gives up (timeout, client gone). If the dispatcher admitted it
      // in the meantime, the slot and the token go back; otherwise it leaves the queue.
      const withdraw = (ticket: Ticket) =>
        Effect.gen(function*() {
          if (yield* Deferred.interrupt(ticket.admitted)) {
            yield* STM.commit(TPriorityQueue.removeIf(queue, (t) => t === ticket))
            return
          }
          const outcome = yield* Deferred.poll(ticket.admitted)
          if (Option.isNone(outcome)) return
          const exit = yield* Effect.exit(outcome.value)
          if (Exit.isSuccess(exit)) yield* Effect.zipRight(exit.value.release, bucket.refund)
        })

      // Fast path: an idle queue, a free slot and a token at hand admit at once, without
      // a ticket or a dispatcher round trip.
      const admitNow = (seq?: number): Effect.Effect<Option.Option<Admitted>> =>
        Effect.gen(function*() {
          if (!(yield* idle) || !(yield* slots.tryAcquire)) return Option.none()
          const release = slots.releaser()
          if (!(yield* bucket.tryTake)) {
            yield* release
            return Option.none()
          }
          const ticketSeq = seq ?? (yield* nextSeq)
          return Option.some({ waitedMs: 0, seq: ticketSeq, bypassed: false, release })
        })

      const admit = (priority: Priority, seq?: number): Effect.Effect<Admitted, AdmissionError> =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const now = yield* admitNow(seq)
            if (Option.isSome(now)) return now.value
            const enqueuedAt = yield* Clock.currentTimeMillis
            const s = yield* Ref.get(settings)
            const ticketSeq = seq ?? (yield* nextSeq)
            const ticket: Ticket = {
              seq: ticketSeq,
              priority,
              enqueuedAt,
              admitted: yield* Deferred.make<Admission, AdmissionError>(),
              span: yield* Effect.serviceOption(Tracer.ParentSpan)
            }
            const offered = yield* STM.commit(offer(ticket, s))
            if (offered._tag === "Bypass") {
              // Skips the queue, not the limits: it still needs an in-flight slot and a token,
              // both within the queue timeout.
              yield* count("bypassed")
              yield* metrics.fallbackPassthrough
              const tokenTimeout = new RateLimited({ reason: "token_timeout", retryAfterMs: 1000 })
              if (!(yield* restore(slots.acquireWithin(config.queueTimeout)))) return yield* tokenTimeout
              const release = slots.releaser()
              const left = Duration.millis(Duration.toMillis(config.queueTimeout) - ((yield* Clock.currentTimeMillis) - enqueuedAt))
              yield* restore(bucket.take).pipe(
                Effect.timeoutFail({ duration: left, onTimeout: () => tokenTimeout }),
                Effect.onError(() => release)
              )
              const waitedMs = (yield* Clock.currentTimeMillis) - enqueuedAt
              return { waitedMs, seq: ticketSeq, bypassed: true, release }
            }
            yield* count("enqueued")
            if (offered._tag === "Evicted") {
              yield* count("dropped")
              yield* Deferred.fail(offered.victim.admitted, new Evicted())
            }
            const admission = yield* restore(Deferred.await(ticket.admitted)).pipe(
              Effect.timeoutFail({
                duration: config.queueTimeout,
                onTimeout: () => new RateLimited({ reason: "queue_timeout", retryAfterMs: 1000 })
              }),
              Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : withdraw(ticket)))
            )
            const waitedMs = (yield* Clock.currentTimeMillis) - enqueuedAt
            return { waitedMs, seq: ticketSeq, bypassed: false, release: admission.release }
          })
        ).pipe(
          Effect.catchTag("RateLimited", (e) =>
            e.reason === "queue_timeout"
              ? Effect.zipRight(count("timedOut"), Effect.flatMap(retryAfterMs, (ms) => Effect.fail(new RateLimited({ reason: e.reason, retryAfterMs: ms }))))
              : Effect.fail(e))
        )

      const next = Effect.tap(STM.commit(TPriorityQueue.take(queue)), () => count("dequeued"))

      return RequestQueue.of({
        admitNow,
        admit,
        slots,
        head: STM.commit(TPriorityQueue.peek(queue)),
        headChanged: (ticket) =>
          STM.commit(STM.flatMap(TPriorityQueue.peekOption(queue), (head) =>
            Option.isSome(head) && head.value === ticket ? STM.retry : STM.void)),
        next,
        expireLow: (ticket) =>
          Effect.gen(function*() {
            yield* STM.commit(TPriorityQueue.removeIf(queue, (t) => t === ticket))
            const ms = yield* retryAfterMs
            if (yield* Deferred.fail(ticket.admitted, new RateLimited({ reason: "low_priority_timeout", retryAfterMs: ms }))) {
              yield* count("dropped")
            }
          }),
        close: Effect.gen(function*() {
          const waiting = yield* STM.commit(STM.zipRight(TRef.set(closed, true), TPriorityQueue.takeAll(queue)))
          yield* Effect.forEach(waiting, (t) => Deferred.fail(t.admitted, new ShuttingDown()), { discard: true })
        }),
        settings: Ref.get(settings),
        configure: (change) =>
          Effect.gen(function*() {
            const depth = yield* STM.commit(TPriorityQueue.size(queue))
            if (change.max !== undefined && change.max < depth) {
              return yield* new InvalidPatch({ field: "queue_max_size", reason: `below the current depth (${depth})` })
            }
            yield* Ref.update(settings, (s) => ({ ...s, ...change }))
          }),
        snapshot: Effect.gen(function*() {
          const waiting = yield* STM.commit(TPriorityQueue.toArray(queue))
          const c = yield* Ref.get(counters)
          const s = yield* Ref.get(settings)
          const byPriority = { urgent: 0, high: 0, normal: 0, low: 0 }
          for (const t of waiting) byPriority[t.priority]++
          return {
            ...s,
            size: waiting.length,
            byPriority,
            enqueued: c.enqueued,
            dequeued: c.dequeued,
            dropped: c.dropped,
            timedOut: c.timedOut,
            bypassed: c.bypassed,
            inflight: yield* slots.used
          }
        })
      })
    })
  )
}

type Offered = { readonly _tag: "Queued" } | { readonly _tag: "Bypass" } | { readonly _tag: "Evicted"; readonly victim: Ticket }

const byRankThenSeq: Order.Order<Ticket> = Order.combine(
  Order.mapInput(Order.number, (t: Ticket) => rank[t.priority]),
  Order.mapInput(Order.number, (t: Ticket) => t.seq)
)

/** The newest request of the lowest level present. */
function lowest(waiting: ReadonlyArray<Ticket>): Ticket | undefined {
  let victim: Ticket | undefined
  for (const t of waiting) {
    if (victim === undefined || Order.greaterThan(byRankThenSeq)(t, victim)) victim = t
  }
  return victim
}
