import type { ControlChange, ControlLaw, ControlView, MakeControlLaw } from "../ControlLaw.js"
import { Outcomes } from "./Outcomes.js"
import { calendarPossible, MinuteSends, ShapeVote } from "./QuotaShape.js"
import { bool, child, finite, num, parse } from "./Saved.js"
import { SendWindow } from "./SendWindow.js"

/** Why each number is what it is: sim/README.md. */
export const params = {
  /** The quota window we assume (every shape we know of counts per minute). */
  windowMs: 60_000,
  /** Our own count window: the quota's plus room for network jitter between us and the upstream. */
  capWindowMs: 60_250,
  /** Floor of the level: one call a minute keeps learning whether the quota came back. */
  minRpm: 1,
  /** Time at a learned level, with no 429, before probing above it. */
  holdMs: 75_000,
  /** First probe step; each further step (one per evaluation) doubles it. */
  probeRpm: 1,
  /** Probe only while our sends fill this share of the level: an idle sidecar learns nothing by raising it. */
  busyShare: 0.8,
  /** A streak of this many 429s with no success in between that cut the level less deeply than `retestAbove` is re-tested at once. */
  longStreak: 3,
  /** See longStreak: a passing storm of 429s drains our count little; a real drop of the quota drains it more. */
  retestAbove: 0.7,
  /** Busy at least this long before a 429: its count comes from a filled window and is firm. */
  firmAfterMs: 50_000,
  /** Longest pause after a 429 that continues a streak (one spacing at the level, at most this). */
  maxPauseMs: 15_000
}

export type LearningParams = typeof params

const busyMs = 20_000

/**
 * "open": no quota learned, the configured rate and burst apply; "hold": at the learned level;
 * "probe": raising the level above what was learned, one evaluation step at a time.
 */
export type LearningMode = "open" | "hold" | "probe"

/**
 * Learns the quota as a count per minute from 429s without Retry-After, and holds it: the level
 * is both the refill rate and the most calls sent in any 60.25 s, never above the configured rate.
 */
export class Learning implements ControlLaw {
  mode: LearningMode = "open"
  level: number
  /** Last learned quota (calls per minute the upstream allowed), null before the first 429. */
  estimate: number | null = null
  private readonly p: LearningParams
  private readonly outcomes: Outcomes
  private readonly sends: SendWindow
  private readonly minute = new MinuteSends()
  private readonly shape = new ShapeVote()
  private holdUntil = 0
  /** When the last 429 that counted arrived. */
  private refusedAt = 0
  private cutAt = 0
  private probeStep = 0
  /** Counted 429s with no success in between (a 429 for a call sent before the last one arrived does not count again). */
  private streak = 0
  /** A call sent after the last counted 429 succeeded. */
  private streakOver = true
  /** The level before the current streak's first 429. */
  private streakFrom = 0
  /** Re-test from this level at the next evaluation: the streak that set the level may not have been the quota. */
  private retestFrom: number | undefined
  /** A calendar-minute quota could explain the current streak's first 429. */
  private minuteFull = false
  /** The quota counts per calendar minute (see ShapeVote). */
  private calendar = false
  /** The estimate came from a window not filled yet (start-up, or after a quiet minute). */
  private unsure = false
  private busySince = 0
  /** The 60 s count filled since the last quiet minute. */
  private sustained = false
  private lastSentAt = -Infinity
  private reported: LearningMode = "open"
  private reason = ""

  /** `options` is for experiments (the simulator); the sidecar uses `params`. */
  constructor(private baseRpm: number, options: Partial<LearningParams> = {}) {
    this.p = { ...params, ...options }
    this.level = baseRpm
    this.outcomes = new Outcomes(this.p.windowMs / 1000)
    this.sends = new SendWindow(this.p.capWindowMs)
  }

  get effectiveRpm(): number {
    return this.level
  }

  /**
   * One token at most once a quota is known or the 60 s count has filled: sends stay evenly
   * spaced instead of replaying last minute's burst. A fresh start or a quiet minute gets the
   * configured burst back.
   */
  get burst(): number {
    return this.mode === "open" && !this.sustained ? Infinity : 1
  }

  dispatched(now: number): void {
    // A send reported late (see SendWindow.add) only counts: it tells nothing of a quiet minute.
    if (now >= this.lastSentAt) {
      if (now - this.lastSentAt > this.p.windowMs) {
        this.busySince = now
        this.sustained = false
      }
      this.lastSentAt = now
    }
    this.sends.add(now)
    this.minute.add(now)
  }

  uncounted(sentAt: number): void {
    this.sends.remove(sentAt)
    this.minute.remove(sentAt)
  }

  dispatchAt(now: number): number {
    const at = Math.max(now, this.holdUntil)
    const over = this.sends.count(now) - Math.max(1, Math.floor(this.level))
    if (over < 0) return at
    this.sustained = true
    return Math.max(at, this.sends.leavesAt(now, over + 1))
  }

  // A Retry-After is the bucket's pause; the 429 still tells the count, so it is learned like any other.
  record(outcome: "ok" | "throttled", now: number, _retryAfterMs?: number, sentAt: number = now): void {
    this.outcomes.add(now, outcome === "throttled")
    if (outcome === "ok") return this.succeeded(sentAt)
    this.uncounted(sentAt)
    // Sent before the last counted 429 arrived: it met the same full count.
    if (sentAt < this.refusedAt) return this.refine(sentAt)
    this.streak = this.streakOver ? 1 : this.streak + 1
    this.streakOver = false
    this.learn(now, sentAt)
  }

  evaluate(now: number): ControlChange | undefined {
    // Our sends of the last 20 s used the level: only then is a probe informative.
    const busy = this.sends.countWithin(now, busyMs) >= (this.p.busyShare * this.level * busyMs) / 60_000
    if (this.retestFrom !== undefined) {
      this.level = Math.min(this.baseRpm, Math.max(this.level, this.retestFrom))
      this.retestFrom = undefined
      this.startProbe("re-testing the last streak's estimate")
    } else if (this.mode === "hold" && busy && now - this.cutAt >= this.p.holdMs) {
      this.startProbe(`no 429 for ${Math.round((now - this.cutAt) / 1000)} s`)
    }
    if (this.mode === "probe" && busy) this.level = Math.min(this.baseRpm, this.level + this.p.probeRpm * 2 ** this.probeStep++)
    if (this.mode === "probe" && this.level >= this.baseRpm) {
      this.mode = "open"
      this.reason = "probe reached the configured rate"
    }
    if (this.mode === this.reported) return undefined
    const change = { from: this.reported, to: this.mode, effectiveRpm: this.level, reason: this.reason }
    this.reported = this.mode
    return change
  }

  rebase(baseRpm: number): void {
    this.baseRpm = baseRpm
    this.level = this.mode === "open" ? baseRpm : Math.min(this.level, baseRpm)
    if (this.level >= baseRpm) this.mode = "open"
  }

  view(now: number): ControlView {
    return {
      law: "learning",
      mode: this.mode,
      baseRpm: this.baseRpm,
      effectiveRpm: this.level,
      rate429: this.outcomes.ratio(now, this.p.windowMs / 1000),
      quotaEstimateRpm: this.estimate
    }
  }

  save(): string {
    return JSON.stringify({
      law: "learning",
      mode: this.mode, level: this.level, estimate: this.estimate, holdUntil: this.holdUntil, refusedAt: this.refusedAt, cutAt: this.cutAt,
      probeStep: this.probeStep, streak: this.streak, streakOver: this.streakOver, streakFrom: this.streakFrom, retestFrom: this.retestFrom ?? null,
      minuteFull: this.minuteFull, calendar: this.calendar, unsure: this.unsure, busySince: this.busySince, sustained: this.sustained,
      lastSentAt: finite(this.lastSentAt), reported: this.reported, reason: this.reason,
      outcomes: this.outcomes.save(), sends: this.sends.save(), minute: this.minute.save(), shape: this.shape.save()
    })
  }

  restore(state: string): void {
    const s = parse(state)
    if (s["law"] !== "learning") return
    const mode = (m: unknown, fallback: LearningMode): LearningMode => (m === "open" || m === "hold" || m === "probe" ? m : fallback)
    this.mode = mode(s["mode"], this.mode)
    this.reported = mode(s["reported"], this.reported)
    // The configured rate is this replica's own ceiling.
    this.level = Math.min(this.baseRpm, num(s, "level", this.level))
    this.estimate = typeof s["estimate"] === "number" ? s["estimate"] : null
    this.holdUntil = num(s, "holdUntil", this.holdUntil)
    this.refusedAt = num(s, "refusedAt", this.refusedAt)
    this.cutAt = num(s, "cutAt", this.cutAt)
    this.probeStep = num(s, "probeStep", this.probeStep)
    this.streak = num(s, "streak", this.streak)
    this.streakOver = bool(s, "streakOver", this.streakOver)
    this.streakFrom = num(s, "streakFrom", this.streakFrom)
    this.retestFrom = typeof s["retestFrom"] === "number" ? s["retestFrom"] : undefined
    this.minuteFull = bool(s, "minuteFull", this.minuteFull)
    this.calendar = bool(s, "calendar", this.calendar)
    this.unsure = bool(s, "unsure", this.unsure)
    this.busySince = num(s, "busySince", this.busySince)
    this.sustained = bool(s, "sustained", this.sustained)
    this.lastSentAt = num(s, "lastSentAt", this.lastSentAt)
    this.reason = typeof s["reason"] === "string" ? s["reason"] : this.reason
    this.outcomes.restore(child(s, "outcomes"))
    this.sends.restore(child(s, "sends"))
    this.minute.restore(child(s, "minute"))
    this.shape.restore(child(s, "shape"))
    if (this.level >= this.baseRpm && this.mode !== "open") this.rebase(this.baseRpm)
  }

  private succeeded(sentAt: number): void {
    // Only a call sent after the last 429 ends its streak: earlier ones met an older count.
    if (sentAt < this.refusedAt || this.streakOver) return
    this.streakOver = true
    // The streak is over. A long streak that cut little is re-tested from the level it began at:
    // a real quota refuses again at its count, a passing storm of 429s does not. An estimate
    // from a window not filled yet is probed from where it is, without waiting for holdMs.
    const cutLittle = this.streak >= this.p.longStreak && this.level >= this.p.retestAbove * this.streakFrom
    if (this.mode === "hold" && cutLittle) this.retestFrom = this.streakFrom
    else if (this.mode === "hold" && this.unsure) this.retestFrom = this.level
    this.unsure = false
  }

  private startProbe(reason: string): void {
    this.mode = "probe"
    this.probeStep = 0
    this.reason = reason
  }

  /** A 429 that starts or continues a streak: what we sent that counted says what the quota is. */
  private learn(now: number, sentAt: number): void {
    const sliding = this.sends.countWithin(sentAt, this.p.windowMs)
    const calendar = this.minute.current(sentAt)
    let estimate: number
    if (this.streak === 1) {
      // The upstream refused with `sliding` of our calls in its last 60 s: for a sliding-window
      // quota that is the quota. A calendar-minute quota refuses at the same count since the
      // minute began every time, while the last 60 s may hold more than one minute allowed.
      const previous = this.minute.previous(sentAt)
      this.calendar = this.shape.observe(sliding, calendar, previous) === "calendar"
      // A calendar-minute quota could explain this 429 (see ShapeVote): the streak's next 429
      // then waits for the minute to turn.
      this.minuteFull = calendarPossible(sliding, calendar, previous)
      estimate = this.calendar ? calendar : sliding
      this.streakFrom = this.level
      this.unsure = now - this.busySince < this.p.firmAfterMs
    } else {
      // More 429s with no success in between: the window has not moved yet (the quota dropped
      // below what it holds), or the upstream refuses for another reason. Each is read the same.
      estimate = Math.min(this.level, this.calendar ? calendar : sliding)
    }
    this.setLevel(estimate)
    this.mode = "hold"
    this.cutAt = now
    this.refusedAt = now
    this.reason = `429 with ${sliding} calls counted in 60 s, ${calendar} this minute (streak ${this.streak})`
    // After a first 429 the level equals what the window holds, so the 60 s count itself waits
    // for a slot. A later one pauses one spacing at the level; the second also waits for the
    // next calendar minute when a calendar-minute quota is known or likely: it resets there, and
    // the call retried now would otherwise meet its third 429. Not otherwise: a long wait
    // drains our count, and a storm of 429s would then read as a deep drop of the quota.
    let until = this.streak === 1 ? now : now + Math.min(this.p.maxPauseMs, this.p.windowMs / this.level)
    if (this.streak === 2 && (this.unsure || this.calendar || this.minuteFull)) until = Math.max(until, Math.ceil(now / 60_000) * 60_000)
    this.holdUntil = until
  }

  /**
   * Calls refused together leave the count only as their 429s come in, so each one refines the
   * estimate of the 429 that came first.
   */
  private refine(sentAt: number): void {
    if (this.mode !== "hold") return
    const count = this.calendar ? this.minute.current(sentAt) : this.sends.countWithin(sentAt, this.p.windowMs)
    this.setLevel(Math.min(this.level, count))
  }

  private setLevel(estimate: number): void {
    this.estimate = Math.max(this.p.minRpm, Math.min(this.baseRpm, estimate))
    this.level = this.estimate
  }
}

export const make: MakeControlLaw = (baseRpm) => new Learning(baseRpm)
