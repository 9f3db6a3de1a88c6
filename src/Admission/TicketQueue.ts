import { priorities, rank, type Priority } from "../Common/Priority.js"
import type { ClientState, Lane } from "./ClientTable.js"
import { Heap } from "./Heap.js"
import type { Ticket } from "./Ticket.js"

/** One priority level: its clients' lanes, and which of them may be picked. */
interface Level {
  count: number
  /** Every lane with requests (a doubly linked list). */
  members: Lane | undefined
  /** Fair: the virtual time, the start of the turn served last. */
  now: number
  /** Eligible lanes, the next to serve on top: fair, by turn (start, then seq); otherwise by seq. */
  readonly ready: Heap<Lane, "heapIndex">
}

/**
 * The waiting requests. Per level, one FIFO per client (ordered by seq, so a retry keeps its
 * place ahead of the client's newer requests) and a heap of the clients that may be picked.
 * Fair (start-time fair queuing with unit cost): every client's turns are numbered in the level's
 * virtual time, one unit per request; a client that (re)joins starts at the current virtual time,
 * without credit for time it was away, so it is served before a backlogged client's next turn
 * but never twice in a row ahead of it. Backlogged clients alternate round-robin. Otherwise the
 * oldest request of the level first (plain FIFO). A client over its own rate is parked: out of
 * the heaps until its token is due. A min-heap on deadlines spans all levels. Adding, removing,
 * picking and parking are O(log n); nothing copies or scans the queue (`worst` scans the lowest
 * level's clients, not its requests).
 */
export class TicketQueue {
  private readonly levels: ReadonlyArray<Level>
  private readonly deadlines = new Heap<Ticket, "heapIndex">("heapIndex", earlier)
  private readonly parked = new Heap<ClientState, "parkIndex">("parkIndex", (a, b) => a.parkedUntil < b.parkedUntil)

  constructor(private readonly fair = true) {
    this.levels = priorities.map(() => ({ count: 0, members: undefined, now: 0, ready: new Heap<Lane, "heapIndex">("heapIndex", fair ? byTurn : byAge) }))
  }

  get size(): number {
    return this.deadlines.size
  }

  countOf(priority: Priority): number {
    return this.levels[rank[priority]]!.count
  }

  byPriority(): Record<Priority, number> {
    const [urgent, high, normal, low] = this.levels.map((l) => l.count)
    return { urgent: urgent!, high: high!, normal: normal!, low: low! }
  }

  /** The request served next: at the best level with an eligible client, that client's oldest. */
  best(): Ticket | undefined {
    for (const level of this.levels) {
      const lane = level.ready.peek()
      if (lane !== undefined) return lane.head
    }
    return undefined
  }

  /**
   * `drop_lowest`'s victim, at the lowest level present: fair, the newest request of the client
   * with the most requests there; otherwise the level's newest. O(clients at that level).
   */
  worst(): Ticket | undefined {
    for (let index = this.levels.length - 1; index >= 0; index--) {
      let chosen: Lane | undefined
      for (let lane = this.levels[index]!.members; lane !== undefined; lane = lane.memberNext) {
        if (chosen === undefined || (this.fair && lane.count !== chosen.count ? lane.count > chosen.count : lane.tail!.seq > chosen.tail!.seq)) {
          chosen = lane
        }
      }
      if (chosen !== undefined) return chosen.tail
    }
    return undefined
  }

  /** The request whose deadline comes first. */
  earliestDeadline(): Ticket | undefined {
    return this.deadlines.peek()
  }

  add(ticket: Ticket): void {
    const client = ticket.client
    const level = this.levels[rank[ticket.priority]]!
    const lane = client.lanes[rank[ticket.priority]] ??= newLane(client, rank[ticket.priority])
    // New requests carry the highest seq: append. A retry walks back to its place.
    let after = lane.tail
    while (after !== undefined && after.seq > ticket.seq) after = after.prev
    const before = after === undefined ? lane.head : after.next
    ticket.prev = after
    ticket.next = before
    if (after === undefined) lane.head = ticket
    else after.next = ticket
    if (before === undefined) lane.tail = ticket
    else before.prev = ticket
    lane.count++
    level.count++
    client.queued++
    if (lane.count === 1) {
      addMember(level, lane)
      if (client.parkedUntil === 0) this.activate(level, lane)
    } else if (lane.head === ticket) level.ready.update(lane)
    this.deadlines.push(ticket)
  }

  /** Unlinks `ticket`; false when it was not queued. `served`: it got its turn, the round moves on. */
  remove(ticket: Ticket, served = false): boolean {
    if (!this.deadlines.remove(ticket)) return false
    const client = ticket.client
    const level = this.levels[rank[ticket.priority]]!
    const lane = client.lanes[rank[ticket.priority]]!
    const wasHead = lane.head === ticket
    if (ticket.prev === undefined) lane.head = ticket.next
    else ticket.prev.next = ticket.next
    if (ticket.next === undefined) lane.tail = ticket.prev
    else ticket.next.prev = ticket.prev
    ticket.prev = undefined
    ticket.next = undefined
    lane.count--
    level.count--
    client.queued--
    if (served && this.fair) {
      // Its turn is taken: virtual time moves to it, the client's next turn is one unit later.
      level.now = Math.max(level.now, lane.start)
      lane.finish = lane.start + 1
      lane.start = lane.finish
    }
    if (lane.count === 0) {
      removeMember(level, lane)
      level.ready.remove(lane)
    } else if (wasHead) level.ready.update(lane)
    return true
  }

  /** Takes `client` out of every schedule until `until` (its own rate); its requests stay queued. */
  park(client: ClientState, until: number): void {
    this.parked.remove(client)
    client.parkedUntil = until
    this.parked.push(client)
    for (const lane of client.lanes) if (lane !== undefined) this.levels[lane.level]!.ready.remove(lane)
  }

  /** Puts a parked client back at the end of the rounds it has requests in. */
  unpark(client: ClientState): void {
    if (!this.parked.remove(client)) return
    client.parkedUntil = 0
    for (const lane of client.lanes) if (lane !== undefined && lane.count > 0) this.activate(this.levels[lane.level]!, lane)
  }

  /** The parked client due first. */
  nextWake(): ClientState | undefined {
    return this.parked.peek()
  }

  /** Removes and returns every waiting request (shutdown). */
  drain(): ReadonlyArray<Ticket> {
    const all = this.deadlines.toArray()
    for (const ticket of all) this.remove(ticket)
    return all
  }

  // A client (re)joining starts its turns now: no credit for the time it had nothing queued.
  private activate(level: Level, lane: Lane): void {
    if (level.ready.has(lane)) return
    lane.start = Math.max(level.now, lane.finish)
    level.ready.push(lane)
  }
}

const earlier = (a: Ticket, b: Ticket): boolean => a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq)
const byAge = (a: Lane, b: Lane): boolean => a.head!.seq < b.head!.seq
const byTurn = (a: Lane, b: Lane): boolean => a.start < b.start || (a.start === b.start && byAge(a, b))

const newLane = (client: ClientState, level: number): Lane => ({
  client,
  level,
  head: undefined,
  tail: undefined,
  count: 0,
  start: 0,
  finish: 0,
  heapIndex: -1,
  memberPrev: undefined,
  memberNext: undefined
})

function addMember(level: Level, lane: Lane): void {
  lane.memberPrev = undefined
  lane.memberNext = level.members
  if (level.members !== undefined) level.members.memberPrev = lane
  level.members = lane
}

function removeMember(level: Level, lane: Lane): void {
  if (lane.memberPrev === undefined) level.members = lane.memberNext
  else lane.memberPrev.memberNext = lane.memberNext
  if (lane.memberNext !== undefined) lane.memberNext.memberPrev = lane.memberPrev
  lane.memberPrev = undefined
  lane.memberNext = undefined
}
