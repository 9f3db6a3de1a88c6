import { exponential, type Random } from "./Random.js"

export type Priority = "urgent" | "high" | "normal" | "low"
export const priorities: ReadonlyArray<Priority> = ["urgent", "high", "normal", "low"]

export interface ClientSpec {
  /** Requests per minute, Poisson arrivals. */
  readonly offeredRpm: number
  /** Share of each priority (sums to 1). */
  readonly mix: Readonly<Record<Priority, number>>
  /** A client still queued after this long gives up (it never sees a 429 for it). */
  readonly timeoutMs: number
  readonly model: string
}

export const defaultMix: Readonly<Record<Priority, number>> = { urgent: 0.1, high: 0.2, normal: 0.5, low: 0.2 }

export interface Arrival {
  /** ms from the start. */
  readonly at: number
  readonly priority: Priority
  readonly model: string
}

/** The whole run's arrivals, drawn up front from the seed. */
export const arrivals = (spec: ClientSpec, durationMs: number, rng: Random): Array<Arrival> => {
  const out: Array<Arrival> = []
  const mean = 60_000 / spec.offeredRpm
  for (let at = exponential(rng, mean); at < durationMs; at += exponential(rng, mean)) {
    out.push({ at: Math.round(at), priority: pick(spec.mix, rng()), model: spec.model })
  }
  return out
}

function pick(mix: Readonly<Record<Priority, number>>, u: number): Priority {
  let acc = 0
  for (const p of priorities) {
    acc += mix[p]
    if (u < acc) return p
  }
  return "low"
}
