import { Clock, Context, Effect, Layer, Schedule, Stream } from "effect"
import { Inflight, ModelSlots } from "../Admission/Inflight.js"
import { PriorityQueue } from "../Admission/PriorityQueue.js"
import { type BackendState, RateLimiter } from "../Admission/RateLimiter.js"
import type { ClientStats } from "../Admission/ClientTable.js"
import type { Priority } from "../Common/Priority.js"
import { Metrics } from "../Observability/Metrics.js"
import { version } from "../Version.js"

/** The state every observer sees: `/status`, each dashboard stream (snake_case JSON). */
export interface StateSnapshot {
  readonly timestamp: number
  readonly version: string
  readonly uptime_seconds: number
  readonly requests: {
    readonly total: number
    readonly by_status: Readonly<Record<string, number>>
    readonly errors: number
    readonly rate_limited: number
    readonly current_rpm: number
  }
  readonly queue: {
    readonly size: number
    readonly max: number
    readonly policy: string
    readonly by_priority: Readonly<Record<Priority, number>>
    readonly enqueued: number
    readonly dequeued: number
    readonly dropped: number
    readonly timed_out: number
    readonly bypassed: number
  }
  /** The busiest clients (top 10 by queued requests) and how many are tracked; never per-client metrics. */
  readonly clients: { readonly tracked: number; readonly busiest: ReadonlyArray<ClientStats> }
  readonly token_bucket: { readonly tokens: number; readonly capacity: number; readonly rate_rpm: number }
  readonly retreat: { readonly state: string; readonly effective_rpm: number; readonly base_rpm: number; readonly rate_429: number }
  /** The rate law and what it learned: the quota, and in-flight limits of models whose workers were full. */
  readonly control: {
    readonly law: string
    readonly state: string
    readonly quota_estimate_rpm: number | null
    readonly model_inflight_limits: Readonly<Record<string, number>>
  }
  readonly inflight: number
  /** Where the limit lives: this process alone, or shared through Redis with the replicas seen. */
  readonly limiter: {
    readonly backend: {
      readonly kind: "local" | "redis"
      readonly state: BackendState
      readonly healthy: boolean
      readonly replicas: number
      readonly replica_ids: ReadonlyArray<string>
      readonly replica_id: string | null
      readonly leader: boolean
      readonly limit_key: string | null
      readonly url: string | null
      readonly failure_mode: "local" | "closed" | null
      readonly last_error: string | null
    }
  }
}

export class Snapshot extends Context.Tag("sidecar/Snapshot")<Snapshot, {
  /** Computed at most once per second however many readers there are. */
  readonly current: Effect.Effect<StateSnapshot>
  /** Fresh (uncached) state, for tests and the metrics scrape. */
  readonly compute: Effect.Effect<StateSnapshot>
  /** SSE frames: `retry: 3000` first, then one snapshot per second. */
  readonly events: Stream.Stream<string>
}>() {
  static readonly layer = Layer.effect(
    Snapshot,
    Effect.gen(function*() {
      const queue = yield* PriorityQueue
      const bucket = yield* RateLimiter
      const inflight = yield* Inflight
      const modelSlots = yield* ModelSlots
      const metrics = yield* Metrics
      const startedAt = yield* Clock.currentTimeMillis

      const compute = Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const q = yield* queue.snapshot
        const b = yield* bucket.snapshot
        const r = yield* metrics.requestCounts
        const c = yield* queue.clients
        return {
          timestamp: now,
          version,
          uptime_seconds: (now - startedAt) / 1000,
          requests: { total: r.total, by_status: r.byStatus, errors: r.errors, rate_limited: r.rateLimited, current_rpm: r.currentRpm },
          queue: {
            size: q.size,
            max: q.max,
            policy: q.policy,
            by_priority: q.byPriority,
            enqueued: q.enqueued,
            dequeued: q.dequeued,
            dropped: q.dropped,
            timed_out: q.timedOut,
            bypassed: q.bypassed
          },
          clients: { tracked: c.tracked, busiest: c.busiest },
          token_bucket: { tokens: round2(b.tokens), capacity: b.capacity, rate_rpm: round2(b.effectiveRpm) },
          retreat: { state: b.mode, effective_rpm: round2(b.effectiveRpm), base_rpm: b.baseRpm, rate_429: round2(b.rate429) },
          control: {
            law: b.law,
            state: b.mode,
            quota_estimate_rpm: b.quotaEstimateRpm === null ? null : round2(b.quotaEstimateRpm),
            model_inflight_limits: yield* modelSlots.limits
          },
          inflight: yield* inflight.used,
          limiter: {
            backend: {
              kind: b.backend.kind,
              state: b.backend.state,
              healthy: b.backend.healthy,
              replicas: b.backend.replicas,
              replica_ids: b.backend.replicaIds,
              replica_id: b.backend.replicaId,
              leader: b.backend.leader,
              limit_key: b.backend.limitKey,
              url: b.backend.url,
              failure_mode: b.backend.failureMode,
              last_error: b.backend.lastError
            }
          }
        } satisfies StateSnapshot
      })

      const current = yield* Effect.cachedWithTTL(compute, "1 second")
      const frames = Stream.repeatEffectWithSchedule(current, Schedule.spaced("1 second")).pipe(
        Stream.map((s) => `data: ${JSON.stringify(s)}\n\n`)
      )
      return Snapshot.of({ current, compute, events: Stream.concat(Stream.make("retry: 3000\n\n"), frames) })
    })
  )
}

const round2 = (n: number) => Math.round(n * 100) / 100
