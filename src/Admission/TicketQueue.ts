import { priorities, rank, type Priority } from "../Common/Priority.js"
import type { ClientState, Lane } from "./ClientTable.js"
import { Heap } from "./Heap.js"
import type { Ticket } from "./Ticket.js"

/** One priority level: its clients' lanes, and which of them may be picked. */
interface Level {
  count: number
  /** Every lane with requests (a doubly linked list). */
  members: Lane | undefined
  /** Fair: the round of eligible lanes (a ring); the cursor's lane is served next. */
  cursor: Lane | undefined
  /** FIFO: eligible lanes by the seq of their oldest request. */
  readonly oldest: Heap<Lane, "heapIndex">
}

/**
 * The waiting requests. Per level, one FIFO per client (ordered by seq, so a retry keeps its
 * place ahead of the client's newer requests) and a schedule of the clients that may be picked:
 * fair = a round robin over them, one request per turn; otherwise the oldest request of the
 * level first (plain FIFO). A client over its own rate is parked: out of every schedule until
 * its token is due. A min-heap on deadlines spans all levels. Adding, removing, picking and
 * parking are O(1) or O(log n); nothing copies or scans the queue (`worst` scans the lowest
 * level's clients, not its requests).
 */
export class TicketQueue {
  private readonly levels: ReadonlyArray<Level> = priorities.map(() => ({
    count: 0,
    members: undefined,
    cursor: undefined,
    oldest: new Heap<Lane, "heapIndex">("heapIndex", (a, b) => a.head!.seq < b.head!.seq)
  }))
  private readonly deadlines = new Heap<Ticket, "heapIndex">("heapIndex", earlier)
  private readonly parked = new Heap<ClientState, "parkIndex">("parkIndex", (a, b) => a.parkedUntil < b.parkedUntil)

  constructor(private readonly fair = true) {}

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
      const lane = this.fair ? level.cursor : level.oldest.peek()
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
    } else if (!this.fair && lane.head === ticket) level.oldest.update(lane)
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
    if (lane.count === 0) {
      removeMember(level, lane)
      this.deactivate(level, lane)
    } else if (this.fair) {
      if (served && level.cursor === lane) level.cursor = lane.next
    } else if (wasHead) level.oldest.update(lane)
    return true
  }

  /** Takes `client` out of every schedule until `until` (its own rate); its requests stay queued. */
  park(client: ClientState, until: number): void {
    this.parked.remove(client)
    client.parkedUntil = until
    this.parked.push(client)
    for (const lane of client.lanes) if (lane !== undefined && lane.count > 0) this.deactivate(this.levels[lane.level]!, lane)
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

  // A lane joins at the end of the round: just before the cursor.
  private activate(level: Level, lane: Lane): void {
    if (lane.active) return
    lane.active = true
    if (!this.fair) return level.oldest.push(lane)
    const cursor = level.cursor
    if (cursor === undefined) {
      level.cursor = lane
      lane.prev = lane
      lane.next = lane
      return
    }
    const last = cursor.prev!
    last.next = lane
    lane.prev = last
    lane.next = cursor
    cursor.prev = lane
  }

  private deactivate(level: Level, lane: Lane): void {
    if (!lane.active) return
    lane.active = false
    if (!this.fair) {
      level.oldest.remove(lane)
      return
    }
    if (lane.next === lane) level.cursor = undefined
    else {
      lane.prev!.next = lane.next
      lane.next!.prev = lane.prev
      if (level.cursor === lane) level.cursor = lane.next
    }
    lane.prev = undefined
    lane.next = undefined
  }
}

const earlier = (a: Ticket, b: Ticket): boolean => a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq)

const newLane = (client: ClientState, level: number): Lane => ({
  client,
  level,
  head: undefined,
  tail: undefined,
  count: 0,
  active: false,
  prev: undefined,
  next: undefined,
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
