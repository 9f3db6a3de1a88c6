import { Clock, Context, Effect, Layer } from "effect"
import * as Prom from "prom-client"
import { priorities, type Priority } from "../Common/Priority.js"
import { SlidingCounts } from "../Common/SlidingCounts.js"
import type { BackendState } from "../Admission/RateLimiter.js"

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
  /** The configured (base) rate; the gauge reads 0 until a caller supplies it. */
  readonly configuredRpm?: number
  /** The rate limiter's estimate of the provider's quota; 0 = not known (yet). */
  readonly quotaEstimateRpm?: number
  /** The queue bound (`SIDECAR_QUEUE_MAX`, hot-changeable); 0 until a caller supplies it. */
  readonly queueMax?: number
  /** Where the limit lives, and the replicas sharing it (1 without Redis). */
  readonly backend?: { readonly state: BackendState; readonly replicas: number }
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
  /** Arrival to the end of the answer (last byte sent, or the client gone), whatever the status. */
  readonly requestDuration: (priority: Priority, seconds: number) => Effect.Effect<void>
  /** Arrival to the first body byte sent to the client, for streamed (SSE) answers only. */
  readonly streamFirstByte: (priority: Priority, seconds: number) => Effect.Effect<void>
  /** Token usage the upstream reported for one answer; negative or non-finite counts are ignored. */
  readonly tokensUsed: (prompt: number, completion: number) => Effect.Effect<void>
  /** The shared limit switched state (Redis lost or back). */
  readonly backendSwitched: (to: BackendState) => Effect.Effect<void>
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
      const durationFor = memo<Prom.Histogram.Internal<string>>()
      const firstByteFor = memo<Prom.Histogram.Internal<string>>()
      const promptTokens = m.usageTokens.labels("prompt")
      const completionTokens = m.usageTokens.labels("completion")
      // Known label sets exist from the first scrape, so the first event is an increase.
      for (const p of priorities) {
        for (const status of ownStatuses) requestsFor(`${p}|${status}`, () => m.requests.labels(p, String(status))).inc(0)
        m.queueLatency.zero({ priority: p })
        m.requestDuration.zero({ priority: p })
        m.streamFirstByte.zero({ priority: p })
      }
      m.upstreamLatency.zero({ provider: "primary" })
      for (const status of upstreamErrorStatuses) m.upstreamErrors.inc({ status_code: String(status), provider: "primary" }, 0)
      promptTokens.inc(0)
      completionTokens.inc(0)
      for (const state of backendStates) m.backendSwitches.inc({ to: state }, 0)

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
        requestDuration: (priority, seconds) => Effect.sync(() => durationFor(priority, () => m.requestDuration.labels(priority)).observe(seconds)),
        streamFirstByte: (priority, seconds) => Effect.sync(() => firstByteFor(priority, () => m.streamFirstByte.labels(priority)).observe(seconds)),
        tokensUsed: (prompt, completion) =>
          Effect.sync(() => {
            if (countable(prompt)) promptTokens.inc(prompt)
            if (countable(completion)) completionTokens.inc(completion)
          }),
        backendSwitched: (to) => Effect.sync(() => m.backendSwitches.inc({ to })),
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
            if (g.configuredRpm !== undefined) m.configuredRpm.set(finiteOrZero(g.configuredRpm))
            if (g.quotaEstimateRpm !== undefined) m.quotaEstimateRpm.set(finiteOrZero(g.quotaEstimateRpm))
            if (g.queueMax !== undefined) m.queueMax.set(finiteOrZero(g.queueMax))
            if (g.backend !== undefined) {
              for (const state of backendStates) m.backendState.set({ state }, state === g.backend.state ? 1 : 0)
              m.replicas.set(g.backend.replicas)
            }
            return registry.metrics()
          }).pipe(Effect.map((body) => ({ contentType: registry.contentType, body })))
      })
    }
  )
}

/**
 * `sidecar_requests_total` statuses created at zero for every priority: those the sidecar answers
 * with itself (400 invalid request, 404 no route, 408 request too slow, 413 body too large,
 * 429 rate limited, 431 headers too large, 499 client left first, 500 defect, 502/504 upstream
 * failed / timed out, 503 queue full or shutting down) and 200, the usual upstream answer.
 */
export const ownStatuses = [200, 400, 404, 408, 413, 429, 431, 499, 500, 502, 503, 504] as const

/**
 * `sidecar_upstream_errors_total{provider="primary"}` status codes created at zero: no answer (0),
 * throttled (429) and the server errors a gateway returns. Other codes appear on first use;
 * `passthrough` only exists when configured, so its series appear on first use too.
 */
export const upstreamErrorStatuses = [0, 429, 500, 502, 503, 504] as const

const backendStates: ReadonlyArray<BackendState> = ["single", "shared", "local_fallback", "closed"]

// adr009's states, and the learning law's: open (nothing learned) 0, hold (at a learned quota) 1, probe 2.
const modeCode: Readonly<Record<string, number>> = { normal: 0, retreat: 1, recover: 2, open: 0, hold: 1, probe: 2 }

const countable = (n: number): boolean => Number.isFinite(n) && n > 0

// Some Prometheus tools reject NaN/Inf gauges; 0 stands for "unknown".
const finiteOrZero = (n: number): number => (Number.isFinite(n) ? n : 0)

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
    retreat: new Prom.Gauge({ name: "sidecar_retreat_state", help: "Control state: 0 normal or open, 1 retreat or hold, 2 recover or probe", ...r }),
    effectiveRpm: new Prom.Gauge({ name: "sidecar_effective_rate_rpm", help: "Effective rate after retreat, requests per minute", ...r }),
    rate429: new Prom.Gauge({ name: "sidecar_upstream_429_rate", help: "Share of upstream 429 answers over the last 60 s", ...r }),
    // Added after the seed; units and suffixes per the Prometheus naming conventions.
    requestDuration: new Prom.Histogram({ name: "sidecar_request_duration_seconds", help: "Time from arrival to the end of the answer, by priority", labelNames: ["priority"], buckets: latencyBuckets, ...r }),
    streamFirstByte: new Prom.Histogram({ name: "sidecar_stream_first_byte_seconds", help: "Time from arrival to the first body byte of a streamed answer, by priority", labelNames: ["priority"], buckets: latencyBuckets, ...r }),
    usageTokens: new Prom.Counter({ name: "sidecar_usage_tokens_total", help: "Tokens the upstream reported in its usage, by type (prompt, completion)", labelNames: ["type"], ...r }),
    configuredRpm: new Prom.Gauge({ name: "sidecar_configured_rate_rpm", help: "Configured rate limit, requests per minute", ...r }),
    quotaEstimateRpm: new Prom.Gauge({ name: "sidecar_quota_estimate_rpm", help: "Estimated provider quota, requests per minute (0 = not known)", ...r }),
    queueMax: new Prom.Gauge({ name: "sidecar_queue_max", help: "Queue bound: requests that may wait at once", ...r }),
    backendState: new Prom.Gauge({ name: "sidecar_limit_backend_state", help: "Where the limit lives: 1 for the current state (single, shared, local_fallback, closed)", labelNames: ["state"], ...r }),
    backendSwitches: new Prom.Counter({ name: "sidecar_limit_backend_switches_total", help: "Switches of the shared limit's state (Redis lost or back), by the state switched to", labelNames: ["to"], ...r }),
    replicas: new Prom.Gauge({ name: "sidecar_limit_replicas", help: "Replicas sharing the limit, this one included (1 without Redis)", ...r })
  }
}
