import { Context, Duration, Effect, Layer, Ref } from "effect"
import { Evicted, InvalidPatch, QueueFull, RateLimited, ShuttingDown } from "../Common/Errors.js"
import { Signal } from "../Common/Signal.js"
import { rank, type Priority } from "../Common/Priority.js"
import { SidecarConfig, type QueueFullPolicy } from "../Config/SidecarConfig.js"
import { ClientTable, type ClientLimitsTable, type ClientState, type ClientStats } from "./ClientTable.js"
import type { Ticket, TicketOutcome } from "./Ticket.js"
import { TicketQueue } from "./TicketQueue.js"

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
}

export interface ClientsSnapshot {
  /** Distinct clients tracked (at most SIDECAR_MAX_CLIENTS; the overflow client not counted). */
  readonly tracked: number
  /** Top 10 by queued requests. */
  readonly busiest: ReadonlyArray<ClientStats>
}

/** Where a newcomer went: into the queue, or past a full one (`passthrough`). */
export type Placement = "queued" | "bypass"

/**
 * The bounded 4-level queue of waiting requests and its full-queue policies, nothing else.
 * Every ticket is settled exactly once (admitted, refused, or left) and leaves the queue then;
 * deadlines are swept by one fiber, not a timer per ticket.
 */
export class PriorityQueue extends Context.Tag("sidecar/PriorityQueue")<PriorityQueue, {
  /** The state of the client named `id` (tracked, or the shared overflow client). */
  readonly client: (id: string) => Effect.Effect<ClientState>
  /**
   * Places a newcomer per the full-queue policy; `drop_lowest` settles its victim as Evicted.
   * A client whose `max_queued` share is full gets RateLimited (`client_queue_full`, no Retry-After yet).
   */
  readonly offer: (ticket: Ticket) => Effect.Effect<Placement, QueueFull | ShuttingDown | RateLimited>
  /** Counts an admission that skipped the queue against its client's own rate. */
  readonly charge: (client: ClientState) => Effect.Effect<void>
  /** Gives the client's own token back (the call never happened). */
  readonly refund: (client: ClientState) => Effect.Effect<void>
  /** Millis until the client's own rate lets it be picked (0: now). */
  readonly clientWaitMs: (client: ClientState) => Effect.Effect<number>
  /** Removes `ticket` and hands its waiter `outcome`; false when it was settled already. */
  readonly settle: (ticket: Ticket, outcome: TicketOutcome) => Effect.Effect<boolean>
  /** Open, nobody waiting, and `client` within its own rate: its newcomer would be first in line. */
  readonly idle: (client: ClientState) => Effect.Effect<boolean>
  /** The best waiting request, if any, without removing it. */
  readonly best: Effect.Effect<Ticket | undefined>
  /** Waits until a request is waiting; returns the best one without removing it. */
  readonly head: Effect.Effect<Ticket>
  /** Completes once `ticket` is no longer the best waiting request. */
  readonly headChanged: (ticket: Ticket) => Effect.Effect<void>
  /** Answers every waiting request 503 and refuses new ones (shutdown); returns how many waited. */
  readonly close: Effect.Effect<number>
  readonly settings: Effect.Effect<QueueSettings>
  readonly configure: (change: Partial<QueueSettings>) => Effect.Effect<void, InvalidPatch>
  readonly countBypass: Effect.Effect<void>
  /** O(1): counters only, no copy of the queue. */
  readonly snapshot: Effect.Effect<QueueSnapshot>
  /** O(clients), never O(queue). */
  readonly clients: Effect.Effect<ClientsSnapshot>
  readonly clientLimits: Effect.Effect<ClientLimitsTable>
  /** Replaces every client's limits; clients over a new rate are parked, those under it freed. */
  readonly configureClients: (table: ClientLimitsTable) => Effect.Effect<void>
}>() {
  static readonly layer = Layer.scoped(
    PriorityQueue,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const clock = yield* Effect.clock
      const queue = new TicketQueue(config.fairness)
      const clients = new ClientTable(config.maxClients, config.clients, clock.unsafeCurrentTimeMillis())
      let closed = false
      const settings = yield* Ref.make<QueueSettings>({ max: config.queueMax, policy: config.queueFullPolicy, lowTimeout: config.lowTimeout })
      const counters = { enqueued: 0, dequeued: 0, dropped: 0, timedOut: 0, bypassed: 0 }
      // Wakes the dispatcher when the best request changes, the sweeper when the first deadline does.
      const headMoved = new Signal()
      const deadlineMoved = new Signal()
      // When the sweeper next runs on its own. A deadline or wake-up at or after it needs no
      // early wake: one that arrives into an empty queue would otherwise re-arm its timer per request.
      let sweepAt = Infinity
      const sweepBy = (at: number) => {
        if (at < sweepAt) deadlineMoved.fire()
      }

      // Parks a client whose own token is not due yet, frees one whose token is.
      const pace = (client: ClientState, due: number) => {
        if (due > 0) {
          queue.park(client, due)
          sweepBy(due)
        } else queue.unpark(client)
      }

      const settleNow = (ticket: Ticket, outcome: TicketOutcome): boolean => {
        if (ticket.outcome !== undefined) return false
        ticket.outcome = outcome
        const before = queue.best()
        const admitted = outcome._tag === "Admitted"
        if (queue.remove(ticket, admitted) && admitted) pace(ticket.client, clients.charge(ticket.client, clock.unsafeCurrentTimeMillis()))
        if (queue.best() !== before) headMoved.fire()
        ticket.resume?.(outcome)
        return true
      }

      // Each client change that can move the head goes through here.
      const reshuffle = (f: () => void) =>
        Effect.sync(() => {
          const before = queue.best()
          f()
          if (queue.best() !== before) headMoved.fire()
        })

      const offer = (ticket: Ticket): Effect.Effect<Placement, QueueFull | ShuttingDown | RateLimited> =>
        Effect.flatMap(Ref.get(settings), (s) =>
          Effect.suspend((): Effect.Effect<Placement, QueueFull | ShuttingDown | RateLimited> => {
            if (closed) return Effect.fail(new ShuttingDown())
            const share = ticket.client.limits.max_queued
            if (share !== undefined && ticket.client.queued >= share) return Effect.fail(clientQueueFull)
            if (queue.size >= s.max) {
              if (s.policy === "passthrough") return Effect.succeed("bypass" as const)
              const victim = s.policy === "drop_lowest" ? queue.worst() : undefined
              if (victim === undefined || rank[victim.priority] <= rank[ticket.priority]) {
                return Effect.fail(new QueueFull({ capacity: s.max }))
              }
              settleNow(victim, { _tag: "Refused", error: evicted })
              counters.dropped++
            }
            const before = queue.best()
            queue.add(ticket)
            counters.enqueued++
            if (queue.best() !== before) headMoved.fire()
            if (queue.earliestDeadline() === ticket) sweepBy(ticket.deadline)
            return Effect.succeed("queued" as const)
          }))

      const settle = (ticket: Ticket, outcome: TicketOutcome) =>
        Effect.sync(() => {
          const done = settleNow(ticket, outcome)
          if (done && outcome._tag === "Admitted") counters.dequeued++
          if (done && outcome._tag === "Refused" && outcome.error._tag === "RateLimited") counters.dropped++
          return done
        })

      const head: Effect.Effect<Ticket> = Effect.suspend(() => {
        const best = queue.best()
        return best !== undefined ? Effect.succeed(best) : Effect.zipRight(headMoved.wait, head)
      })
      const headChanged = (ticket: Ticket): Effect.Effect<void> =>
        Effect.suspend(() => (queue.best() === ticket ? Effect.zipRight(headMoved.wait, headChanged(ticket)) : Effect.void))

      // Expired requests get 429 (the waiter adds the Retry-After it can compute); clients whose
      // own token is due rejoin the rounds.
      const sweep = Effect.suspend(() => {
        const now = clock.unsafeCurrentTimeMillis()
        for (let t = queue.earliestDeadline(); t !== undefined && t.deadline <= now; t = queue.earliestDeadline()) {
          settleNow(t, { _tag: "Refused", error: queueTimeout })
          counters.timedOut++
        }
        const before = queue.best()
        for (let c = queue.nextWake(); c !== undefined && c.parkedUntil <= now; c = queue.nextWake()) pace(c, clients.dueAt(c, now))
        if (queue.best() !== before) headMoved.fire()
        const next = Math.min(queue.earliestDeadline()?.deadline ?? Infinity, queue.nextWake()?.parkedUntil ?? Infinity)
        sweepAt = next
        return next === Infinity
          ? deadlineMoved.wait
          : Effect.timeoutOption(deadlineMoved.wait, Duration.millis(next - now))
      })
      yield* sweep.pipe(Effect.forever, Effect.forkScoped)

      const now = () => clock.unsafeCurrentTimeMillis()
      return PriorityQueue.of({
        client: (id) => Effect.sync(() => clients.resolve(id, now())),
        offer,
        charge: (client) => reshuffle(() => pace(client, clients.charge(client, now()))),
        refund: (client) => reshuffle(() => pace(client, clients.refund(client, now()))),
        clientWaitMs: (client) => Effect.sync(() => Math.max(0, clients.dueAt(client, now()) - now())),
        settle,
        idle: (client) => Effect.sync(() => !closed && queue.size === 0 && client.parkedUntil === 0),
        best: Effect.sync(() => queue.best()),
        head,
        headChanged,
        close: Effect.sync(() => {
          closed = true
          const waiting = queue.drain()
          for (const ticket of waiting) settleNow(ticket, { _tag: "Refused", error: shuttingDown })
          headMoved.fire()
          return waiting.length
        }),
        settings: Ref.get(settings),
        configure: (change) =>
          Effect.suspend(() =>
            change.max !== undefined && change.max < queue.size
              ? Effect.fail(new InvalidPatch({ field: "queue_max_size", reason: `below the current depth (${queue.size})` }))
              : Ref.update(settings, (s) => ({ ...s, ...change }))
          ),
        countBypass: Effect.sync(() => void counters.bypassed++),
        snapshot: Effect.map(Ref.get(settings), (s) => ({ ...s, ...counters, size: queue.size, byPriority: queue.byPriority() })),
        clients: Effect.sync(() => ({ tracked: clients.tracked, busiest: clients.busiest(10, now()) })),
        clientLimits: Effect.sync(() => clients.limits),
        configureClients: (table) =>
          reshuffle(() => {
            const at = now()
            for (const client of clients.configure(table, at)) {
              const due = clients.dueAt(client, at)
              if (due > 0 || client.parkedUntil > 0) pace(client, due)
            }
          })
      })
    })
  )
}

const evicted = new Evicted()
const queueTimeout = new RateLimited({ reason: "queue_timeout", retryAfterMs: 0 })
const clientQueueFull = new RateLimited({ reason: "client_queue_full", retryAfterMs: 0 })
const shuttingDown = new ShuttingDown()
