import { Clock, Context, Effect, Layer, Ref } from "effect"
import * as Prom from "prom-client"
import { priorities, type Priority } from "./Priority.js"
import type { RetreatMode } from "./Retreat.js"

/** Current values for the gauges, read at scrape time. */
export interface GaugeValues {
  readonly ready: boolean
  readonly uptimeSeconds: number
  readonly tokens: number
  readonly effectiveRpm: number
  readonly mode: RetreatMode
  readonly rate429: number
  readonly queueDepth: Readonly<Record<Priority, number>>
}

export interface RequestCounts {
  readonly total: number
  readonly byStatus: Readonly<Record<string, number>>
  /** Answers with status >= 400. */
  readonly errors: number
  readonly rateLimited: number
  /** Requests answered over the last 60 s. */
  readonly currentRpm: number
}

/** Services record facts here; only this module knows registries, names and labels. */
export class Metrics extends Context.Tag("sidecar/Metrics")<Metrics, {
  readonly requestCompleted: (priority: Priority, status: number) => Effect.Effect<void>
  readonly queueWait: (priority: Priority, seconds: number) => Effect.Effect<void>
  /** One upstream answer (status) or failure (status 0 = no HTTP answer). */
  readonly upstreamAnswered: (provider: string, status: number, seconds: number) => Effect.Effect<void>
  readonly fallbackPassthrough: Effect.Effect<void>
  readonly requestCounts: Effect.Effect<RequestCounts>
  /** Prometheus text exposition with the gauges set to `gauges`. */
  readonly render: (gauges: GaugeValues) => Effect.Effect<{ readonly contentType: string; readonly body: string }>
}>() {
  static readonly layer = Layer.effect(
    Metrics,
    Effect.gen(function*() {
      const registry = new Prom.Registry()
      Prom.collectDefaultMetrics({ register: registry })
      // prom-client names these gauges `_total`, which promtool (rightly) rejects.
      for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
        registry.removeSingleMetric(name)
      }
      const m = makeInstruments(registry)
      const counts = yield* Ref.make<Counts>({ total: 0, byStatus: {}, errors: 0, rateLimited: 0, perSecond: [] })

      return Metrics.of({
        requestCompleted: (priority, status) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.sync(() => m.requests.inc({ priority, status: String(status) })).pipe(
              Effect.zipRight(Ref.update(counts, (c) => countRequest(c, status, now)))
            )),
        queueWait: (priority, seconds) => Effect.sync(() => m.queueLatency.observe({ priority }, seconds)),
        upstreamAnswered: (provider, status, seconds) =>
          Effect.sync(() => {
            m.upstreamLatency.observe({ provider }, seconds)
            if (status === 0 || status >= 400) m.upstreamErrors.inc({ status_code: String(status), provider })
          }),
        fallbackPassthrough: Effect.sync(() => m.fallback.inc()),
        requestCounts: Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.map(Ref.get(counts), (c) => ({
            total: c.total,
            byStatus: c.byStatus,
            errors: c.errors,
            rateLimited: c.rateLimited,
            currentRpm: c.perSecond.reduce((sum, [second, n]) => (second > now / 1000 - 60 ? sum + n : sum), 0)
          }))),
        render: (g) =>
          Effect.promise(() => {
            m.health.set(g.ready ? 1 : 0)
            m.uptime.set(g.uptimeSeconds)
            m.tokens.set(g.tokens)
            m.tokensRate.set(g.effectiveRpm / 60)
            m.effectiveRpm.set(g.effectiveRpm)
            m.retreat.set(retreatCode[g.mode])
            m.rate429.set(g.rate429)
            for (const p of priorities) m.queueDepth.set({ priority: p }, g.queueDepth[p])
            return registry.metrics()
          }).pipe(Effect.map((body) => ({ contentType: registry.contentType, body })))
      })
    })
  )
}

const retreatCode: Readonly<Record<RetreatMode, number>> = { normal: 0, retreat: 1, recover: 2 }

interface Counts {
  readonly total: number
  readonly byStatus: Readonly<Record<string, number>>
  readonly errors: number
  readonly rateLimited: number
  /** [second, answered] for the last minute. */
  readonly perSecond: ReadonlyArray<readonly [number, number]>
}

function countRequest(c: Counts, status: number, now: number): Counts {
  const second = Math.floor(now / 1000)
  const last = c.perSecond[c.perSecond.length - 1]
  const perSecond: Counts["perSecond"] = last !== undefined && last[0] === second
    ? [...c.perSecond.slice(0, -1), [second, last[1] + 1]]
    : [...c.perSecond.filter(([s]) => s > second - 60), [second, 1]]
  const key = String(status)
  return {
    total: c.total + 1,
    byStatus: { ...c.byStatus, [key]: (c.byStatus[key] ?? 0) + 1 },
    errors: c.errors + (status >= 400 ? 1 : 0),
    rateLimited: c.rateLimited + (status === 429 ? 1 : 0),
    perSecond
  }
}

// Names from the seed; labels per its phase-3 decision: `provider`, never a model id.
function makeInstruments(registers: Prom.Registry) {
  const r = { registers: [registers] }
  const latencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
  return {
    requests: new Prom.Counter({ name: "sidecar_requests_total", help: "Requests answered, by priority and HTTP status", labelNames: ["priority", "status"], ...r }),
    tokens: new Prom.Gauge({ name: "sidecar_tokens_available", help: "Tokens currently in the bucket", ...r }),
    tokensRate: new Prom.Gauge({ name: "sidecar_tokens_rate", help: "Token refill rate, tokens per second", ...r }),
    queueDepth: new Prom.Gauge({ name: "sidecar_queue_depth", help: "Requests waiting in the queue, by priority", labelNames: ["priority"], ...r }),
    queueLatency: new Prom.Histogram({ name: "sidecar_queue_latency_seconds", help: "Time from arrival to admission, by priority", labelNames: ["priority"], buckets: latencyBuckets, ...r }),
    upstreamLatency: new Prom.Histogram({ name: "sidecar_upstream_latency_seconds", help: "Time to upstream response headers", labelNames: ["provider"], buckets: latencyBuckets, ...r }),
    upstreamErrors: new Prom.Counter({ name: "sidecar_upstream_errors_total", help: "Upstream answers >= 400 and failures (status_code 0)", labelNames: ["status_code", "provider"], ...r }),
    fallback: new Prom.Counter({ name: "sidecar_fallback_passthrough_total", help: "Requests that skipped a full queue (passthrough policy)", ...r }),
    health: new Prom.Gauge({ name: "sidecar_health_status", help: "1 when ready, 0 when not", ...r }),
    uptime: new Prom.Gauge({ name: "sidecar_uptime_seconds", help: "Seconds since start", ...r }),
    retreat: new Prom.Gauge({ name: "sidecar_retreat_state", help: "Retreat state: 0 normal, 1 retreat, 2 recover", ...r }),
    effectiveRpm: new Prom.Gauge({ name: "sidecar_effective_rate_rpm", help: "Effective rate after retreat, requests per minute", ...r }),
    rate429: new Prom.Gauge({ name: "sidecar_upstream_429_rate", help: "Share of upstream 429 answers over the last 60 s", ...r })
  }
}
