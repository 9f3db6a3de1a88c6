import { num, type Saved } from "./Saved.js"

/** Our calls not refused, sent in the current calendar minute (what a fixed-window quota counts) and in the one before. */
export class MinuteSends {
  private count = 0
  private minute = -1
  private before = 0

  /** A call reported late counts in the minute it was sent, while that is the current or the previous one. */
  add(at: number): void {
    const minute = Math.floor(at / 60_000)
    if (minute < this.minute) {
      if (minute === this.minute - 1) this.before++
      return
    }
    if (minute !== this.minute) {
      this.before = minute === this.minute + 1 ? this.count : 0
      this.minute = minute
      this.count = 0
    }
    this.count++
  }

  remove(at: number): void {
    if (Math.floor(at / 60_000) === this.minute && this.count > 0) this.count--
  }

  current(now: number): number {
    return Math.floor(now / 60_000) === this.minute ? this.count : 0
  }

  save(): Saved {
    return { count: this.count, minute: this.minute, before: this.before }
  }

  restore(saved: Saved): void {
    this.count = num(saved, "count", this.count)
    this.minute = num(saved, "minute", this.minute)
    this.before = num(saved, "before", this.before)
  }

  /** The whole previous calendar minute's count. */
  previous(now: number): number {
    const minute = Math.floor(now / 60_000)
    return minute === this.minute ? this.before : minute === this.minute + 1 ? this.count : 0
  }
}

/**
 * Which count binds: a sliding window refuses at the same count over the last 60 s every time,
 * a calendar minute at the same count since the minute began. Consecutive 429s vote for the
 * count that repeated while the other did not; two votes decide. Sliding until shown otherwise.
 */
export class ShapeVote {
  private votes = 0
  private lastSliding = -1
  private lastCalendar = -1

  /**
   * `previous` is the whole previous calendar minute's count. A calendar count that the previous
   * minute exceeded, or that is under half the sliding one (60 s hold two minutes at most),
   * cannot be a calendar quota; 2 spare for calls that crossed a minute boundary on the way.
   */
  observe(sliding: number, calendar: number, previous: number): "sliding" | "calendar" {
    const possible = calendarPossible(sliding, calendar, previous)
    if (this.lastSliding >= 0) {
      const calendarRepeated = Math.abs(calendar - this.lastCalendar) <= 1
      const slidingRepeated = Math.abs(sliding - this.lastSliding) <= 1
      if (possible && calendarRepeated && !slidingRepeated) this.votes = Math.min(2, this.votes + 1)
      else if (!possible || (slidingRepeated && !calendarRepeated)) this.votes = Math.max(-2, this.votes - 1)
    }
    this.lastSliding = sliding
    this.lastCalendar = calendar
    return this.votes >= 2 && possible ? "calendar" : "sliding"
  }

  save(): Saved {
    return { votes: this.votes, lastSliding: this.lastSliding, lastCalendar: this.lastCalendar }
  }

  restore(saved: Saved): void {
    this.votes = num(saved, "votes", this.votes)
    this.lastSliding = num(saved, "lastSliding", this.lastSliding)
    this.lastCalendar = num(saved, "lastCalendar", this.lastCalendar)
  }
}

export const calendarPossible = (sliding: number, calendar: number, previous: number): boolean =>
  calendar > 0 && 2 * calendar + 2 >= sliding && calendar >= previous - 2
