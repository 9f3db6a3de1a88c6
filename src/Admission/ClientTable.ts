import type { Priority } from "../Common/Priority.js"
import { SlidingCounts } from "../Common/SlidingCounts.js"
import type { Ticket } from "./Ticket.js"

/** One client's limits as configured (YAML `clients:`, SIDECAR_CLIENTS, the admin `clients` member). */
export interface ClientLimits {
  readonly rpm?: number
  readonly max_queued?: number
  readonly max_priority?: Priority
}
export type ClientLimitsTable = Readonly<Record<string, ClientLimits>>

/** Where clients beyond SIDECAR_MAX_CLIENTS go; not a valid X-Client-Id, so nobody can claim it. */
export const OVERFLOW = "(overflow)"
/** The limits entry for clients not named in the table. */
export const DEFAULT_ENTRY = "default"

/** One client's FIFO at one priority level, and its place in that level's schedule. */
export interface Lane {
  readonly client: ClientState
  readonly level: number
  head: Ticket | undefined
  tail: Ticket | undefined
  count: number
  /** Fair: the virtual time of its head's turn, and the time after its last turn (one unit per request). */
  start: number
  finish: number
  /** Its slot in the level's heap of eligible lanes (-1: empty, or its client over its rate). */
  heapIndex: number
  /** Every lane with requests at the level, eligible or not (`drop_lowest` looks there). */
  memberPrev: Lane | undefined
  memberNext: Lane | undefined
}

export interface ClientState {
  readonly id: string
  limits: ClientLimits
  /** Its own token bucket (only with an rpm limit): burst one minute's worth, refilled at rpm. */
  tokens: number
  updatedAt: number
  /** Over its rate until then: none of its requests is picked (0 = eligible). */
  parkedUntil: number
  parkIndex: number
  queued: number
  lastSeen: number
  /** Admissions per second over the last minute. */
  readonly admitted: SlidingCounts
  /** By priority rank, made on first use. */
  readonly lanes: Array<Lane | undefined>
}

export interface ClientStats {
  readonly id: string
  readonly queued: number
  readonly admitted_per_minute: number
}

const MINUTE_MS = 60_000
// A client unseen this long with nothing queued and a full bucket can be forgotten without loss.
const IDLE_MS = MINUTE_MS
// Busy clients at the front of the recency order are rotated back, a few per newcomer.
const EVICTION_PROBES = 4

export const newClient = (id: string, limits: ClientLimits, now: number): ClientState => ({
  id,
  limits,
  tokens: capacity(limits),
  updatedAt: now,
  parkedUntil: 0,
  parkIndex: -1,
  queued: 0,
  lastSeen: now,
  admitted: new SlidingCounts(60, 1),
  lanes: [undefined, undefined, undefined, undefined]
})

/**
 * The tracked clients (at most `max`, least recently seen first) and their own rate buckets.
 * Every operation is O(1) except `configure` and `busiest`, which are O(clients).
 */
export class ClientTable {
  private readonly clients = new Map<string, ClientState>()
  private readonly overflow: ClientState
  /** The last entry of `clients`' recency order (maybe since forgotten: it is only compared with a live entry). */
  private newest: ClientState | undefined

  constructor(private readonly max: number, private table: ClientLimitsTable, now: number) {
    this.overflow = newClient(OVERFLOW, this.limitsFor(OVERFLOW), now)
  }

  get tracked(): number {
    return this.clients.size
  }

  get limits(): ClientLimitsTable {
    return this.table
  }

  /** The client's state; a newcomer beyond `max` shares the overflow client's. */
  resolve(id: string, now: number): ClientState {
    const known = this.clients.get(id)
    if (known !== undefined) {
      // Already the newest entry (one client asking again and again): no reinsertion to pay.
      if (known !== this.newest) {
        this.clients.delete(id)
        this.clients.set(id, known)
        this.newest = known
      }
      known.lastSeen = now
      return known
    }
    if (this.clients.size >= this.max && !this.forgetOne(now)) {
      this.overflow.lastSeen = now
      return this.overflow
    }
    const client = newClient(id, this.limitsFor(id), now)
    this.clients.set(id, client)
    this.newest = client
    return client
  }

  /** New limits for everyone; returns every client whose rate state may have changed. */
  configure(table: ClientLimitsTable, now: number): ReadonlyArray<ClientState> {
    this.table = table
    const all = [...this.clients.values(), this.overflow]
    for (const client of all) {
      refill(client, now)
      const wasLimited = client.limits.rpm !== undefined
      client.limits = this.limitsFor(client.id)
      client.tokens = wasLimited ? Math.min(capacity(client.limits), client.tokens) : capacity(client.limits)
    }
    return all
  }

  /** Counts an admission and spends one of the client's own tokens; returns when it may be picked again (0: now). */
  charge(client: ClientState, now: number): number {
    client.admitted.add(now, 0)
    if (client.limits.rpm === undefined) return 0
    refill(client, now)
    client.tokens = Math.max(0, client.tokens - 1)
    return dueAt(client, now)
  }

  /** A token back for an admission whose call never happened; returns when it may be picked (0: now). */
  refund(client: ClientState, now: number): number {
    if (client.limits.rpm === undefined) return 0
    refill(client, now)
    client.tokens = Math.min(capacity(client.limits), client.tokens + 1)
    return dueAt(client, now)
  }

  dueAt(client: ClientState, now: number): number {
    if (client.limits.rpm === undefined) return 0
    refill(client, now)
    return dueAt(client, now)
  }

  /** The `n` clients with the most queued requests (then the most admitted), overflow included. */
  busiest(n: number, now: number): ReadonlyArray<ClientStats> {
    const stats: Array<ClientStats> = []
    for (const client of [...this.clients.values(), this.overflow]) {
      const admitted = client.admitted.sum(now, 0)
      if (client.queued > 0 || admitted > 0) stats.push({ id: client.id, queued: client.queued, admitted_per_minute: admitted })
    }
    return stats.sort((a, b) => b.queued - a.queued || b.admitted_per_minute - a.admitted_per_minute).slice(0, n)
  }

  private limitsFor(id: string): ClientLimits {
    return this.table[id] ?? this.table[DEFAULT_ENTRY] ?? {}
  }

  // Forgets the least recently seen client if it is idle; busy ones met on the way go to the back.
  private forgetOne(now: number): boolean {
    for (let probe = 0; probe < EVICTION_PROBES; probe++) {
      const oldest = this.clients.values().next().value
      if (oldest === undefined) return false
      this.clients.delete(oldest.id)
      if (oldest.queued === 0 && oldest.parkedUntil === 0 && now - oldest.lastSeen >= IDLE_MS) return true
      this.clients.set(oldest.id, oldest)
      this.newest = oldest
    }
    return false
  }
}

const capacity = (limits: ClientLimits): number => Math.max(1, limits.rpm ?? 1)

function refill(client: ClientState, now: number): void {
  const rpm = client.limits.rpm
  if (rpm === undefined || now <= client.updatedAt) {
    client.updatedAt = Math.max(client.updatedAt, now)
    return
  }
  const tokens = Math.min(capacity(client.limits), client.tokens + ((now - client.updatedAt) * rpm) / MINUTE_MS)
  const whole = Math.round(tokens)
  client.tokens = Math.abs(tokens - whole) < 1e-9 ? whole : tokens
  client.updatedAt = now
}

function dueAt(client: ClientState, now: number): number {
  const rpm = client.limits.rpm
  if (rpm === undefined || client.tokens >= 1) return 0
  return now + Math.max(1, Math.ceil(((1 - client.tokens) * MINUTE_MS) / rpm))
}
