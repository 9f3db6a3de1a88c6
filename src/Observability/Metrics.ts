import { Clock, Context, Effect, Layer } from "effect"
import * as Prom from "prom-client"
import { priorities, type Priority } from "../Common/Priority.js"
import { SlidingCounts } from "../Common/SlidingCounts.js"

/** Current values for the gauges, read at scrape time. */
export interface GaugeValues {
  readonly ready: boolean
  readonly uptimeSeconds: number
  readonly tokens: number
  readonly effectiveRpm: number
  /** Control-law mode; see `modeCode`. */
  readonly mode: string
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
  static readonly layer = Layer.sync(
    Metrics,
    () => {
      const registry = new Prom.Registry()
      Prom.collectDefaultMetrics({ register: registry })
      // prom-client names these gauges `_total`, which promtool (rightly) rejects.
      for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
        registry.removeSingleMetric(name)
      }
      const m = makeInstruments(registry)
      // Counted on every request: a plain mutable tally, owned by this closure alone.
      const counts = new RequestTally()
      // prom-client hashes label objects on every call; labelled children are looked up once.
      const requestsFor = memo<Prom.Counter.Internal>()
      const queueLatencyFor = memo<Prom.Histogram.Internal<string>>()
      const upstreamLatencyFor = memo<Prom.Histogram.Internal<string>>()

      return Metrics.of({
        requestCompleted: (priority, status) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.sync(() => {
              requestsFor(`${priority}|${status}`, () => m.requests.labels(priority, String(status))).inc()
              counts.add(status, now)
            })),
        queueWait: (priority, seconds) => Effect.sync(() => queueLatencyFor(priority, () => m.queueLatency.labels(priority)).observe(seconds)),
        upstreamAnswered: (provider, status, seconds) =>
          Effect.sync(() => {
            upstreamLatencyFor(provider, () => m.upstreamLatency.labels(provider)).observe(seconds)
            if (status === 0 || status >= 400) m.upstreamErrors.inc({ status_code: String(status), provider })
          }),
        fallbackPassthrough: Effect.sync(() => m.fallback.inc()),
        requestCounts: Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => counts.read(now))),
        render: (g) =>
          Effect.promise(() => {
            m.health.set(g.ready ? 1 : 0)
            m.uptime.set(g.uptimeSeconds)
            m.tokens.set(g.tokens)
            m.tokensRate.set(g.effectiveRpm / 60)
            m.effectiveRpm.set(g.effectiveRpm)
            m.retreat.set(modeCode[g.mode] ?? 0)
            m.rate429.set(g.rate429)
            for (const p of priorities) m.queueDepth.set({ priority: p }, g.queueDepth[p])
            return registry.metrics()
          }).pipe(Effect.map((body) => ({ contentType: registry.contentType, body })))
      })
    }
  )
}

const modeCode: Readonly<Record<string, number>> = { normal: 0, retreat: 1, recover: 2 }

function memo<V>(): (key: string, make: () => V) => V {
  const cache = new Map<string, V>()
  return (key, make) => {
    let value = cache.get(key)
    if (value === undefined) cache.set(key, (value = make()))
    return value
  }
}

class RequestTally {
  private total = 0
  private errors = 0
  private rateLimited = 0
  private readonly byStatus = new Map<number, number>()
  private readonly perSecond = new SlidingCounts(60, 1)

  add(status: number, now: number): void {
    this.total++
    if (status >= 400) this.errors++
    if (status === 429) this.rateLimited++
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1)
    this.perSecond.add(now, 0)
  }

  read(now: number): RequestCounts {
    const byStatus: Record<string, number> = {}
    for (const [status, n] of [...this.byStatus].sort((a, b) => a[0] - b[0])) byStatus[String(status)] = n
    return { total: this.total, byStatus, errors: this.errors, rateLimited: this.rateLimited, currentRpm: this.perSecond.sum(now, 0) }
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
