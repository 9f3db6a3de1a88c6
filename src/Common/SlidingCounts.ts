/**
 * Event counts per second over a sliding window, in a ring of one slot per second: adding is
 * O(1) and allocation-free, which matters because it runs on every request. Each slot holds
 * `width` counters (e.g. answers and 429s).
 */
export class SlidingCounts {
  private readonly counts: Float64Array
  private readonly stamps: Float64Array

  constructor(private readonly seconds: number, private readonly width: number) {
    this.counts = new Float64Array(seconds * width)
    this.stamps = new Float64Array(seconds).fill(-1)
  }

  add(now: number, counter: number, by = 1): void {
    const second = Math.floor(now / 1000)
    const slot = second % this.seconds
    if (this.stamps[slot] !== second) {
      this.stamps[slot] = second
      this.counts.fill(0, slot * this.width, (slot + 1) * this.width)
    }
    this.counts[slot * this.width + counter]! += by
  }

  /** Sum of `counter` over the last `windowSeconds` (at most the ring's size). */
  sum(now: number, counter: number, windowSeconds = this.seconds): number {
    const second = Math.floor(now / 1000)
    let total = 0
    for (let slot = 0; slot < this.seconds; slot++) {
      if (second - this.stamps[slot]! < windowSeconds) total += this.counts[slot * this.width + counter]!
    }
    return total
  }
}
