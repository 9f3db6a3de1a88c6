/**
 * A concurrency cap is not a rate cap: NVIDIA answers 429 "Worker local total request limit
 * reached (32/32)" when a model's workers are full. Such a 429 says nothing about the quota, so
 * it must not cut the rate; it bounds how many calls to that model may be in flight at once.
 */

// NIM's "Worker local total request limit reached (32/32)" and the usual wordings of a
// concurrency cap. Deliberately not "request limit reached" alone: that is how quotas speak too.
const capBodies = [
  /\bworkers?\b.*\blimit reached\b/i,
  /\bconcurren(?:cy|t requests?) limit\b/i,
  /\btoo many concurrent\b/i,
  /\bmax(?:imum)? concurren/i
]
// "(32/32)": the limit is the second number; a bracketed pair first, a bare one otherwise.
const fractions = [/\((\d+)\s*\/\s*(\d+)\)/, /\b(\d+)\s*\/\s*(\d+)\b/]

/** The cap signal in a 429 body, with the limit when the body states it (the N of "N/N"). */
export const concurrencySignal = (body: string): { readonly limit: number | undefined } | undefined => {
  if (!capBodies.some((re) => re.test(body))) return undefined
  const m = fractions.map((re) => re.exec(body)).find((x) => x !== null)
  const limit = m === undefined ? undefined : Number(m[2])
  return { limit: limit !== undefined && limit > 0 ? limit : undefined }
}

export const params = {
  /** Without a cap signal for this long, the limit may grow by one. */
  quietMs: 60_000,
  /** A limit the upstream stated (N/N) is believed longer before probing above it. */
  statedQuietMs: 300_000,
  /** Models tracked at once; the least recently used one is forgotten beyond this. */
  maxModels: 256
} as const

interface ModelLimit {
  limit: number
  /** The upstream stated the limit (N/N) rather than us inferring it from our in-flight count. */
  stated: boolean
  /** The last cap signal or probe: the quiet period counts from here. */
  lastChangeAt: number
}

/** Learns and holds a per-model in-flight limit from cap signals; additive probe after quiet. */
export class ModelConcurrency {
  // Map keeps insertion order: re-inserting on use makes the first key the least recently used.
  private readonly models = new Map<string, ModelLimit>()

  constructor(private readonly maxLimit: number) {}

  /** The in-flight limit for `model`, undefined when none was learned. */
  limitFor(model: string): number | undefined {
    return this.models.get(model)?.limit
  }

  /**
   * A cap signal: `inflightNow` counts our calls to the model in flight, this one included. The
   * limit is what the body states (N of N/N), and never more than we had in flight less this
   * call: a stated N we were far from means others share those workers.
   */
  onCapSignal(model: string, inflightNow: number, statedLimit: number | undefined, now: number): number {
    const ours = Math.max(1, inflightNow - 1)
    const limit = Math.min(this.maxLimit, statedLimit === undefined ? ours : Math.min(statedLimit, ours))
    this.touch(model, { limit, stated: statedLimit !== undefined, lastChangeAt: now })
    return limit
  }

  /**
   * A call to `model` was admitted with `inflightNow` calls in flight (this one included). Only a
   * call that fills the limit is a reason to probe: a model that never reaches it keeps it.
   */
  onDispatch(model: string, inflightNow: number, now: number): void {
    const m = this.models.get(model)
    if (m === undefined || inflightNow < m.limit || m.limit >= this.maxLimit) return
    if (now - m.lastChangeAt >= (m.stated ? params.statedQuietMs : params.quietMs)) {
      m.limit += 1
      m.lastChangeAt = now
    }
  }

  /** A successful answer keeps the model's entry fresh. */
  onSuccess(model: string): void {
    const m = this.models.get(model)
    if (m !== undefined) this.touch(model, m)
  }

  snapshot(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const [model, m] of this.models) out[model] = m.limit
    return out
  }

  private touch(model: string, m: ModelLimit): void {
    this.models.delete(model)
    this.models.set(model, m)
    if (this.models.size > params.maxModels) {
      const oldest = this.models.keys().next()
      if (oldest.done !== true) this.models.delete(oldest.value)
    }
  }
}
