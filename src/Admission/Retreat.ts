/**
 * The seed's ADR-009 retreat state machine, pure. `evaluate` runs once per `stepMs`, so the
 * rate changes at most once per step however many 429s arrive in between.
 */
export const params = {
  windowMs: 60_000,
  enterRatio: 0.05,
  deepenRatio: 0.1,
  factor: 0.75,
  minRpm: 5,
  recoverAfterMs: 120_000,
  recoverRatio: 0.02,
  stepRpm: 2,
  stepMs: 5_000
} as const

export type RetreatMode = "normal" | "retreat" | "recover"

export interface Retreat {
  readonly mode: RetreatMode
  readonly effectiveRpm: number
  /** When the rate was last lowered (entering retreat or deepening it). */
  readonly lastDecreaseAt: number
}

export interface Ratios {
  /** 429 share over the last 60 s. */
  readonly recent: number
  /** 429 share over the last 120 s. */
  readonly long: number
}

export const initial = (baseRpm: number): Retreat => ({ mode: "normal", effectiveRpm: baseRpm, lastDecreaseAt: 0 })

export const evaluate = (r: Retreat, ratios: Ratios, now: number, baseRpm: number): Retreat => {
  switch (r.mode) {
    case "normal":
      return ratios.recent >= params.enterRatio ? decrease(r, now, baseRpm) : { ...r, effectiveRpm: baseRpm }
    case "retreat":
      if (ratios.recent >= params.deepenRatio) return decrease(r, now, baseRpm)
      if (ratios.long < params.recoverRatio && now - r.lastDecreaseAt >= params.recoverAfterMs) {
        return increase({ ...r, mode: "recover" }, baseRpm)
      }
      return r
    case "recover":
      return ratios.recent >= params.enterRatio ? decrease(r, now, baseRpm) : increase(r, baseRpm)
  }
}

/** A base-rate change applies at once; a retreated rate never exceeds the new base. */
export const rebase = (r: Retreat, baseRpm: number): Retreat =>
  r.mode === "normal" ? { ...r, effectiveRpm: baseRpm } : { ...r, effectiveRpm: Math.min(r.effectiveRpm, baseRpm) }

function decrease(r: Retreat, now: number, baseRpm: number): Retreat {
  const floor = Math.min(params.minRpm, baseRpm)
  return { mode: "retreat", effectiveRpm: Math.max(floor, r.effectiveRpm * params.factor), lastDecreaseAt: now }
}

function increase(r: Retreat, baseRpm: number): Retreat {
  const effectiveRpm = Math.min(baseRpm, r.effectiveRpm + params.stepRpm)
  return effectiveRpm >= baseRpm ? { ...r, mode: "normal", effectiveRpm } : { ...r, effectiveRpm }
}
