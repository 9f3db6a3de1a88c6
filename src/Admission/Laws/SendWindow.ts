import { fill, finite, num, type Saved } from "./Saved.js"

/**
 * Our calls that the upstream has not refused, by when we sent them: what a window quota counts.
 * Counting sends rather than answers keeps calls still in flight (a long generation answers
 * 30 s later) in the count. 100 ms slots; adding, removing and the running total are O(1)
 * (amortised) and allocation-free; scans over all slots run only on a 429, a full window or an
 * evaluation.
 */
export class SendWindow {
  private readonly counts: Float64Array
  private readonly stamps: Float64Array
  private total = 0
  /** Oldest slot still inside the window; slots before it have been taken out of `total`. */
  private tail = -Infinity
  /** Newest slot added: a call reported late is counted while the ring still holds its slot. */
  private head = -Infinity

  constructor(private readonly windowMs: number, private readonly slotMs = 100) {
    const slots = Math.ceil(windowMs / slotMs) + 1
    this.counts = new Float64Array(slots)
    this.stamps = new Float64Array(slots).fill(-1)
  }

  /** Calls may be reported late and out of order (a replica's evidence from a Redis outage); one already out of the window is ignored. */
  add(at: number): void {
    const slot = Math.floor(at / this.slotMs)
    // Out of the window, or so old that its ring slot now holds a newer one.
    if (slot < this.tail || slot <= this.head - this.counts.length) return
    if (slot > this.head) this.head = slot
    const i = this.index(slot)
    if (this.stamps[i] !== slot) {
      if (this.stamps[i]! >= this.tail) this.total -= this.counts[i]!
      this.stamps[i] = slot
      this.counts[i] = 0
    }
    this.counts[i]! += 1
    this.total += 1
  }

  /** A call sent at `at` was refused: it never counted upstream. */
  remove(at: number): void {
    const slot = Math.floor(at / this.slotMs)
    const i = this.index(slot)
    if (this.stamps[i] !== slot || this.counts[i]! <= 0) return
    this.counts[i]! -= 1
    if (slot >= this.tail) this.total -= 1
  }

  /** Calls in the window ending at `now`. */
  count(now: number): number {
    this.expire(now)
    return this.total
  }

  /** Calls sent in the last `ms` (<= the window), a call counting until `ms` after the end of its slot. */
  countWithin(now: number, ms: number): number {
    const from = Math.floor((now - ms) / this.slotMs)
    let n = 0
    for (let i = 0; i < this.counts.length; i++) if (this.stamps[i]! >= from) n += this.counts[i]!
    return n
  }

  /** When the `k`-th oldest call in the window leaves it (`now` when there are fewer). */
  leavesAt(now: number, k: number): number {
    this.expire(now)
    let seen = 0
    for (let slot = this.tail; slot < this.tail + this.counts.length; slot++) {
      const i = this.index(slot)
      if (this.stamps[i] !== slot) continue
      seen += this.counts[i]!
      if (seen >= k) return (slot + 1) * this.slotMs + this.windowMs
    }
    return now
  }

  save(): Saved {
    return { counts: Array.from(this.counts), stamps: Array.from(this.stamps), total: this.total, tail: finite(this.tail) }
  }

  restore(saved: Saved): void {
    fill(saved, "counts", this.counts)
    fill(saved, "stamps", this.stamps)
    this.total = num(saved, "total", this.total)
    this.tail = num(saved, "tail", this.tail)
    this.head = Math.max(-Infinity, ...Array.from(this.stamps).filter((stamp) => stamp >= 0))
  }

  // A call is taken as sent at the end of its slot, so it leaves the window no earlier than it should.
  private expire(now: number): void {
    const tail = Math.floor((now - this.windowMs) / this.slotMs)
    if (tail <= this.tail) return
    for (let slot = Math.max(this.tail, tail - this.counts.length); slot < tail; slot++) {
      const i = this.index(slot)
      if (this.stamps[i] === slot) this.total -= this.counts[i]!
    }
    this.tail = tail
  }

  private index(slot: number): number {
    const n = this.counts.length
    return ((slot % n) + n) % n
  }
}
