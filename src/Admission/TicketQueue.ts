import { rank, type Priority } from "../Common/Priority.js"
import type { Ticket } from "./Ticket.js"

/**
 * The waiting requests: one doubly linked FIFO per priority level (ordered by seq, so a retry
 * keeps its place ahead of newer requests) and a min-heap on deadlines. Every operation the hot
 * path and leaving clients use is O(1) or O(log n); nothing copies or scans the queue.
 */
export class TicketQueue {
  private readonly heads: Array<Ticket | undefined> = [undefined, undefined, undefined, undefined]
  private readonly tails: Array<Ticket | undefined> = [undefined, undefined, undefined, undefined]
  private readonly counts = [0, 0, 0, 0]
  private readonly heap: Array<Ticket> = []

  get size(): number {
    return this.heap.length
  }

  countOf(priority: Priority): number {
    return this.counts[rank[priority]]!
  }

  byPriority(): Record<Priority, number> {
    return { urgent: this.counts[0]!, high: this.counts[1]!, normal: this.counts[2]!, low: this.counts[3]! }
  }

  /** The request served next: the oldest seq of the best level. */
  best(): Ticket | undefined {
    for (const head of this.heads) if (head !== undefined) return head
    return undefined
  }

  /** The newest request of the lowest level present (`drop_lowest`'s victim). */
  worst(): Ticket | undefined {
    for (let level = this.tails.length - 1; level >= 0; level--) {
      const tail = this.tails[level]
      if (tail !== undefined) return tail
    }
    return undefined
  }

  /** The request whose deadline comes first. */
  earliestDeadline(): Ticket | undefined {
    return this.heap[0]
  }

  add(ticket: Ticket): void {
    const level = rank[ticket.priority]
    // New requests carry the highest seq: append. A retry walks back to its place.
    let after = this.tails[level]
    while (after !== undefined && after.seq > ticket.seq) after = after.prev
    const before = after === undefined ? this.heads[level] : after.next
    ticket.prev = after
    ticket.next = before
    if (after === undefined) this.heads[level] = ticket
    else after.next = ticket
    if (before === undefined) this.tails[level] = ticket
    else before.prev = ticket
    this.counts[level]!++
    ticket.heapIndex = this.heap.length
    this.heap.push(ticket)
    this.siftUp(ticket.heapIndex)
  }

  /** Unlinks `ticket`; false when it was not queued. */
  remove(ticket: Ticket): boolean {
    if (ticket.heapIndex < 0) return false
    const level = rank[ticket.priority]
    if (ticket.prev === undefined) this.heads[level] = ticket.next
    else ticket.prev.next = ticket.next
    if (ticket.next === undefined) this.tails[level] = ticket.prev
    else ticket.next.prev = ticket.prev
    ticket.prev = undefined
    ticket.next = undefined
    this.counts[level]!--
    const index = ticket.heapIndex
    const last = this.heap.pop()!
    ticket.heapIndex = -1
    if (last !== ticket) {
      this.heap[index] = last
      last.heapIndex = index
      this.siftDown(index)
      this.siftUp(last.heapIndex)
    }
    return true
  }

  /** Removes and returns every waiting request (shutdown). */
  drain(): ReadonlyArray<Ticket> {
    const all = [...this.heap]
    for (const ticket of all) this.remove(ticket)
    return all
  }

  private siftUp(index: number): void {
    const heap = this.heap
    const ticket = heap[index]!
    while (index > 0) {
      const parentIndex = (index - 1) >> 1
      const parent = heap[parentIndex]!
      if (!earlier(ticket, parent)) break
      heap[index] = parent
      parent.heapIndex = index
      index = parentIndex
    }
    heap[index] = ticket
    ticket.heapIndex = index
  }

  private siftDown(index: number): void {
    const heap = this.heap
    const ticket = heap[index]!
    for (;;) {
      let child = 2 * index + 1
      if (child >= heap.length) break
      if (child + 1 < heap.length && earlier(heap[child + 1]!, heap[child]!)) child++
      if (!earlier(heap[child]!, ticket)) break
      heap[index] = heap[child]!
      heap[index]!.heapIndex = index
      index = child
    }
    heap[index] = ticket
    ticket.heapIndex = index
  }
}

const earlier = (a: Ticket, b: Ticket): boolean => a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq)
