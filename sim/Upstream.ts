import { type Random, uniform } from "./Random.js"

/**
 * The simulated provider: a quota in one of three shapes, an optional per-model concurrency cap
 * (NIM's worker limit), an optional burst of spurious 429s, latencies. Times are epoch ms, so a
 * fixed window resets on real calendar minutes, not at the start of the run.
 */
export type QuotaShape = "sliding" | "fixed" | "bucket"

export interface UpstreamSpec {
  readonly shape: QuotaShape
  /** Requests per minute the quota allows at time t (ms from the start). */
  readonly quotaRpm: (t: number) => number
  /** 429s carry Retry-After (whole seconds, as real headers do). */
  readonly retryAfter: boolean
  /** Per-model in-flight cap; `stated` bodies carry "(N/N)". */
  readonly concurrencyCap?: { readonly limit: number; readonly stated: boolean }
  /** The next `count` requests after `at` (ms from the start) are refused whatever the quota. */
  readonly spurious?: { readonly at: number; readonly count: number }
  /** Time from the upstream seeing a request to its (non-429) answer. */
  readonly latencyMs: readonly [number, number]
}

export interface Answer {
  readonly status: 200 | 429
  readonly kind: "ok" | "quota" | "cap" | "spurious"
  readonly body: string
  readonly retryAfterMs: number | undefined
  /** How long after the upstream saw the request the sidecar gets this answer. */
  readonly afterMs: number
}

export const netDelayMs = 20
export const netJitterMs = 10
const throttleAfterMs = 50

export class Upstream {
  private readonly quota: Quota
  private readonly inflight = new Map<string, number>()
  private spuriousLeft: number

  constructor(private readonly spec: UpstreamSpec, private readonly epoch: number, private readonly rng: Random) {
    this.quota = makeQuota(spec.shape, (at) => spec.quotaRpm(at - epoch), epoch)
    this.spuriousLeft = spec.spurious?.count ?? 0
  }

  /** A request for `model` reaches the upstream at `at` (epoch ms). */
  arrive(at: number, model: string): Answer {
    const t = at - this.epoch
    if (this.spec.spurious !== undefined && t >= this.spec.spurious.at && this.spuriousLeft > 0) {
      this.spuriousLeft--
      return throttle("spurious", "Rate limit exceeded", undefined)
    }
    const cap = this.spec.concurrencyCap
    const busy = this.inflight.get(model) ?? 0
    if (cap !== undefined && busy >= cap.limit) {
      const body = cap.stated ? `Worker local total request limit reached (${cap.limit}/${cap.limit})` : "Too many concurrent requests"
      return throttle("cap", body, undefined)
    }
    if (!this.quota.admit(at)) {
      return throttle("quota", "Rate limit exceeded", this.spec.retryAfter ? Math.ceil(this.quota.freeInMs(at) / 1000) * 1000 : undefined)
    }
    this.inflight.set(model, busy + 1)
    return { status: 200, kind: "ok", body: "", retryAfterMs: undefined, afterMs: Math.round(uniform(this.rng, ...this.spec.latencyMs)) }
  }

  /** An admitted request's generation ended (its answer reached the sidecar). */
  done(model: string): void {
    this.inflight.set(model, (this.inflight.get(model) ?? 1) - 1)
  }
}

const throttle = (kind: Answer["kind"], body: string, retryAfterMs: number | undefined): Answer =>
  ({ status: 429, kind, body, retryAfterMs, afterMs: throttleAfterMs })

interface Quota {
  /** Whether a request at `at` fits; counts it if so. Refused requests do not count. */
  admit(at: number): boolean
  /** Millis until a request would fit. */
  freeInMs(at: number): number
}

const MINUTE = 60_000

function makeQuota(shape: QuotaShape, rpm: (at: number) => number, epoch: number): Quota {
  switch (shape) {
    case "sliding": {
      // Accepted arrival times, oldest first; count over (at - 60 s, at].
      const times: Array<number> = []
      let head = 0
      const prune = (at: number) => {
        while (head < times.length && times[head]! <= at - MINUTE) head++
      }
      return {
        admit: (at) => {
          prune(at)
          if (times.length - head >= rpm(at)) return false
          times.push(at)
          return true
        },
        freeInMs: (at) => {
          prune(at)
          const excess = times.length - head - Math.floor(rpm(at)) // slots that must leave first
          return Math.max(0, times[head + Math.max(0, excess)]! + MINUTE - at)
        }
      }
    }
    case "fixed": {
      let minute = -1
      let count = 0
      return {
        admit: (at) => {
          const m = Math.floor(at / MINUTE)
          if (m !== minute) {
            minute = m
            count = 0
          }
          if (count >= rpm(at)) return false
          count++
          return true
        },
        freeInMs: (at) => (Math.floor(at / MINUTE) + 1) * MINUTE - at
      }
    }
    case "bucket": {
      // Refills at the quota per minute; holds `burstShare` of a minute at most (starts full).
      let tokens = rpm(epoch) * burstShare
      let updated = epoch
      const refill = (at: number) => {
        tokens = Math.min(rpm(at) * burstShare, tokens + ((at - updated) * rpm(at)) / MINUTE)
        updated = at
      }
      return {
        admit: (at) => {
          refill(at)
          if (tokens < 1) return false
          tokens -= 1
          return true
        },
        freeInMs: (at) => {
          refill(at)
          return Math.max(0, ((1 - tokens) * MINUTE) / rpm(at))
        }
      }
    }
  }
}

/** A token-bucket quota holds a sixth of a minute's worth (30 RPM: 5 at once). */
export const burstShare = 1 / 6

export const shapeNames: Record<QuotaShape, string> = {
  sliding: "sliding 60 s",
  fixed: "calendar minute",
  bucket: "token bucket"
}
