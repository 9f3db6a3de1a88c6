import { fill, type Saved } from "./Saved.js"

/**
 * Upstream answers per second over a sliding window, in a ring of one slot per second: adding is
 * O(1) and allocation-free (it runs on every answer); reading is O(window seconds), which only
 * the 5 s evaluation and 429s pay.
 */
export class Outcomes {
  private readonly answers: Float64Array
  private readonly throttles: Float64Array
  private readonly stamps: Float64Array
  /** Newest second added: an answer reported late is counted while the ring still holds its second. */
  private newest = -Infinity

  constructor(private readonly seconds: number) {
    this.answers = new Float64Array(seconds)
    this.throttles = new Float64Array(seconds)
    this.stamps = new Float64Array(seconds).fill(-1)
  }

  /** Answers may be reported late and out of order (a replica's evidence from a Redis outage); one older than the ring is ignored. */
  add(now: number, throttled: boolean): void {
    const second = Math.floor(now / 1000)
    if (second <= this.newest - this.seconds) return
    if (second > this.newest) this.newest = second
    const slot = second % this.seconds
    if (this.stamps[slot] !== second) {
      this.stamps[slot] = second
      this.answers[slot] = 0
      this.throttles[slot] = 0
    }
    this.answers[slot]! += 1
    if (throttled) this.throttles[slot]! += 1
  }

  /** Answers (ok and 429) in the last `windowSeconds`. */
  total(now: number, windowSeconds: number): number {
    return this.sum(now, windowSeconds, this.answers)
  }

  throttled(now: number, windowSeconds: number): number {
    return this.sum(now, windowSeconds, this.throttles)
  }

  ok(now: number, windowSeconds: number): number {
    return this.total(now, windowSeconds) - this.throttled(now, windowSeconds)
  }

  /** 429 share of the answers in the last `windowSeconds` (0 when there were none). */
  ratio(now: number, windowSeconds: number): number {
    const total = this.total(now, windowSeconds)
    return total === 0 ? 0 : this.throttled(now, windowSeconds) / total
  }

  /** Start (ms) of the oldest second in the last `windowSeconds` that holds an ok answer, or undefined. */
  oldestOk(now: number, windowSeconds: number): number | undefined {
    const second = Math.floor(now / 1000)
    let oldest: number | undefined
    for (let slot = 0; slot < this.seconds; slot++) {
      const stamp = this.stamps[slot]!
      if (second - stamp < windowSeconds && this.answers[slot]! > this.throttles[slot]! && (oldest === undefined || stamp < oldest)) {
        oldest = stamp
      }
    }
    return oldest === undefined ? undefined : oldest * 1000
  }

  save(): Saved {
    return { answers: Array.from(this.answers), throttles: Array.from(this.throttles), stamps: Array.from(this.stamps) }
  }

  restore(saved: Saved): void {
    fill(saved, "answers", this.answers)
    fill(saved, "throttles", this.throttles)
    fill(saved, "stamps", this.stamps)
    this.newest = Math.max(-Infinity, ...Array.from(this.stamps).filter((stamp) => stamp >= 0))
  }

  private sum(now: number, windowSeconds: number, counts: Float64Array): number {
    const second = Math.floor(now / 1000)
    let total = 0
    for (let slot = 0; slot < this.seconds; slot++) {
      if (second - this.stamps[slot]! < windowSeconds) total += counts[slot]!
    }
    return total
  }
}
