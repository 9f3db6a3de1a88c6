import type { ControlChange, ControlLaw, ControlView, MakeControlLaw } from "../ControlLaw.js"
import { Outcomes } from "./Outcomes.js"
import { child, num, parse } from "./Saved.js"

/**
 * The seed's ADR-009 retreat law, kept exactly (SIDECAR_RATE_CONTROL=adr009): 429 share over 60 s
 * and 120 s, judged once per 5 s step, so the rate changes at most once per step however many
 * 429s arrive in between.
 */
export const params = {
  windowMs: 60_000,
  enterRatio: 0.05,
  deepenRatio: 0.1,
  factor: 0.75,
  minRpm: 5,
  recoverAfterMs: 120_000,
  recoverRatio: 0.02,
  stepRpm: 2
} as const

export type Adr009Mode = "normal" | "retreat" | "recover"

export class Adr009 implements ControlLaw {
  mode: Adr009Mode = "normal"
  effectiveRpm: number
  /** When the rate was last lowered (entering retreat or deepening it). */
  lastDecreaseAt = 0
  // Today's bucket: its configured capacity, no pause or count of its own.
  readonly burst = Infinity
  private readonly outcomes = new Outcomes(params.recoverAfterMs / 1000)

  constructor(private baseRpm: number) {
    this.effectiveRpm = baseRpm
  }

  record(outcome: "ok" | "throttled", now: number): void {
    this.outcomes.add(now, outcome === "throttled")
  }

  dispatched(): void {}

  uncounted(): void {}

  dispatchAt(now: number): number {
    return now
  }

  evaluate(now: number): ControlChange | undefined {
    const from = this.mode
    const recent = this.outcomes.ratio(now, params.windowMs / 1000)
    const long = this.outcomes.ratio(now, params.recoverAfterMs / 1000)
    let reason = ""
    switch (this.mode) {
      case "normal":
        if (recent >= params.enterRatio) reason = this.decrease(now, `429 share ${percent(recent)} >= 5 %`)
        else this.effectiveRpm = this.baseRpm
        break
      case "retreat":
        if (recent >= params.deepenRatio) reason = this.decrease(now, `429 share ${percent(recent)} >= 10 %`)
        else if (long < params.recoverRatio && now - this.lastDecreaseAt >= params.recoverAfterMs) {
          this.mode = "recover"
          reason = this.increase(`120 s 429 share ${percent(long)} < 2 %`)
        }
        break
      case "recover":
        reason = recent >= params.enterRatio ? this.decrease(now, `429 share ${percent(recent)} >= 5 %`) : this.increase("recovering")
        break
    }
    return this.mode === from ? undefined : { from, to: this.mode, effectiveRpm: this.effectiveRpm, reason }
  }

  /** A base-rate change applies at once; a retreated rate never exceeds the new base. */
  rebase(baseRpm: number): void {
    this.baseRpm = baseRpm
    this.effectiveRpm = this.mode === "normal" ? baseRpm : Math.min(this.effectiveRpm, baseRpm)
  }

  view(now: number): ControlView {
    return {
      law: "adr009",
      mode: this.mode,
      baseRpm: this.baseRpm,
      effectiveRpm: this.effectiveRpm,
      rate429: this.outcomes.ratio(now, params.windowMs / 1000),
      quotaEstimateRpm: null
    }
  }

  save(): string {
    return JSON.stringify({ law: "adr009", mode: this.mode, effectiveRpm: this.effectiveRpm, lastDecreaseAt: this.lastDecreaseAt, outcomes: this.outcomes.save() })
  }

  restore(state: string): void {
    const s = parse(state)
    if (s["law"] !== "adr009") return
    const mode = s["mode"]
    if (mode === "normal" || mode === "retreat" || mode === "recover") this.mode = mode
    // The configured rate is this replica's own ceiling.
    this.effectiveRpm = this.mode === "normal" ? this.baseRpm : Math.min(this.baseRpm, num(s, "effectiveRpm", this.effectiveRpm))
    this.lastDecreaseAt = num(s, "lastDecreaseAt", this.lastDecreaseAt)
    this.outcomes.restore(child(s, "outcomes"))
  }

  private decrease(now: number, reason: string): string {
    const floor = Math.min(params.minRpm, this.baseRpm)
    this.mode = "retreat"
    this.effectiveRpm = Math.max(floor, this.effectiveRpm * params.factor)
    this.lastDecreaseAt = now
    return reason
  }

  private increase(reason: string): string {
    this.effectiveRpm = Math.min(this.baseRpm, this.effectiveRpm + params.stepRpm)
    if (this.effectiveRpm >= this.baseRpm) this.mode = "normal"
    return reason
  }
}

export const make: MakeControlLaw = (baseRpm) => new Adr009(baseRpm)

const percent = (ratio: number) => `${(ratio * 100).toFixed(1)} %`
