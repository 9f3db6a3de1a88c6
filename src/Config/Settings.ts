import type { Schema } from "effect"
import * as C from "./SettingCodecs.js"

/** What the queue does with a request when it is full. */
export const QueueFullPolicy = C.oneOf("passthrough", "reject", "drop_lowest")
export type QueueFullPolicy = typeof QueueFullPolicy.value.Type

export type Group = "listening" | "browsers" | "upstreams" | "rate limit" | "shared limit" | "queue" | "requests" | "lifecycle and operations"

/** One setting, described once: everything else (`--help`, `.env.example`, the README table, YAML keys,
 * the admin patch schema, the config shape) is derived from these entries. */
export interface Setting {
  /** The field of `SidecarConfigShape` it fills. Several settings may fill one field: the first one set wins. */
  readonly field: string
  /** Short YAML key; the env name is accepted too. */
  readonly yaml: string
  readonly group: Group
  /** One line, lower case, for --help and the README ("meaning"). */
  readonly doc: string
  /** Extra lines for .env.example. */
  readonly note?: ReadonlyArray<string>
  /** As written in the environment; undefined = unset (the field is an `Option`). */
  readonly default: string | undefined
  /** When unset, the value of this other setting. */
  readonly defaultFrom?: `SIDECAR_${string}`
  /** Never shown in a message, a log line or the admin API. */
  readonly secret?: true
  /** Changeable at run time (admin API, SIGHUP), under this name in an admin patch. */
  readonly hot?: string
  readonly schema: Codec
}

/** Any `C.Codec`, whatever its types. */
interface Codec {
  readonly text: Schema.Schema.AnyNoContext
  readonly value: Schema.Schema.AnyNoContext
  readonly expected: string
  readonly choices?: ReadonlyArray<string>
  readonly structured?: true
}

// The order is the order of --help, .env.example and the README.
export const settings = {
  SIDECAR_HOST: {
    field: "host", yaml: "host", group: "listening", default: "127.0.0.1", schema: C.address,
    doc: "listen address (loopback by default)",
    note: ["The Docker image sets 0.0.0.0; anywhere but loopback, set SIDECAR_ADMIN_TOKEN."]
  },
  SIDECAR_PORT: {
    field: "port", yaml: "port", group: "listening", default: "9190", schema: C.port,
    doc: "proxy port: /v1/*, /health, /health/ready, /status, dashboard, admin API"
  },
  SIDECAR_METRICS_PORT: {
    field: "metricsPort", yaml: "metrics_port", group: "listening", default: "9191", schema: C.port,
    doc: "Prometheus /metrics port (must differ from SIDECAR_PORT)"
  },
  SIDECAR_ALLOWED_HOSTS: {
    field: "allowedHosts", yaml: "allowed_hosts", group: "browsers", default: "", schema: C.hostNames,
    doc: "extra Host names accepted besides loopback names, comma-separated",
    note: ["A request with any other Host header is refused before it spends a token (DNS rebinding)."]
  },
  SIDECAR_CORS_ORIGINS: {
    field: "corsOrigins", yaml: "cors_origins", group: "browsers", default: "", schema: C.origins,
    doc: "browser origins allowed by CORS, comma-separated (https://app.example.com); empty = CORS off"
  },
  SIDECAR_UPSTREAM: {
    field: "upstream", yaml: "upstream", group: "upstreams", default: "https://integrate.api.nvidia.com/v1", schema: C.httpUrl,
    doc: "rate-limited upstream",
    note: ["Serves gateway-alias models, or every model when no passthrough upstream is set."]
  },
  SIDECAR_PASSTHROUGH_UPSTREAM: {
    field: "passthroughUpstream", yaml: "passthrough_upstream", group: "upstreams", default: undefined, schema: C.httpUrl,
    doc: "upstream for non-alias models (unthrottled)"
  },
  SIDECAR_API_KEY: {
    field: "apiKey", yaml: "api_key", group: "upstreams", default: undefined, schema: C.secret, secret: true,
    doc: "upstream API key, required for NVIDIA's API (a warning when unset); never logged or echoed",
    note: ["Replaces the client's Authorization on limited traffic."]
  },
  SIDECAR_GATEWAY_ALIASES: {
    field: "gatewayAliases", yaml: "gateway_aliases", group: "upstreams", default: "nvidia,nvidia-gateway,nvidiavx,nvidiavx18088980513",
    schema: C.aliases, doc: "model prefixes that are rate-limited, comma-separated, any case"
  },
  SIDECAR_UPSTREAM_CONNECTIONS: {
    field: "upstreamConnections", yaml: "upstream_connections", group: "upstreams", default: "256", schema: C.positiveInt,
    doc: "pooled connections per upstream origin"
  },
  SIDECAR_RATE_RPM: {
    field: "rateRpm", yaml: "rate_rpm", group: "rate limit", default: "40", schema: C.positive, hot: "rate_rpm",
    doc: "requests per minute released by the token bucket"
  },
  SIDECAR_BUCKET_CAPACITY: {
    field: "bucketCapacity", yaml: "bucket_capacity", group: "rate limit", default: "40", schema: C.positiveInt, hot: "bucket_capacity",
    doc: "token bucket burst; the bucket starts full"
  },
  SIDECAR_RATE_CONTROL: {
    field: "rateControl", yaml: "rate_control", group: "rate limit", default: "learning", schema: C.oneOf("adr009", "learning"),
    doc: "control law after upstream 429s",
    note: ["learning: learns the quota from 429s and never exceeds SIDECAR_RATE_RPM;", "adr009: the retreat of SPEC section 5."]
  },
  SIDECAR_MAX_INFLIGHT: {
    field: "maxInflight", yaml: "max_inflight", group: "rate limit", default: "64", schema: C.positiveInt,
    doc: "concurrent upstream calls (limited path)"
  },
  SIDECAR_MAX_RETRIES: {
    field: "maxRetries", yaml: "max_retries", group: "rate limit", default: "2", schema: C.nonNegativeInt,
    doc: "internal retries of an upstream 429 before the client sees it"
  },
  SIDECAR_REDIS_URL: {
    field: "redisUrl", yaml: "redis_url", group: "shared limit", default: undefined, schema: C.redisUrl,
    doc: "Redis holding a limit shared by replicas (redis:// or rediss://); unset = this process alone",
    note: [
      "Replicas with the same limit key share one token bucket, one learned rate and priority.",
      "A password in the URL is never logged or shown."
    ]
  },
  SIDECAR_REDIS_FAILURE: {
    field: "redisFailure", yaml: "redis_failure", group: "shared limit", default: "local", schema: C.oneOf("local", "closed"),
    doc: "when Redis is unreachable",
    note: ["local: each replica limits itself to its share (rate / last known replica count);", "closed: limited requests answer 503 with Retry-After until Redis is back."]
  },
  SIDECAR_LIMIT_KEY: {
    field: "limitKey", yaml: "limit_key", group: "shared limit", default: undefined, schema: C.limitKey,
    doc: "name of the shared limit; unset = a hash of the upstream URL and of the API key (never the key)"
  },
  SIDECAR_QUEUE_MAX: {
    field: "queueMax", yaml: "queue_max", group: "queue", default: "500", schema: C.nonNegativeInt, hot: "queue_max_size",
    doc: "queue bound, all priorities together (refused at run time below the current depth)"
  },
  SIDECAR_QUEUE_FULL_POLICY: {
    field: "queueFullPolicy", yaml: "queue_full_policy", group: "queue", default: "passthrough", schema: QueueFullPolicy,
    hot: "queue_full_policy", doc: "when the queue is full"
  },
  SIDECAR_FALLBACK_PASSTHROUGH: {
    field: "queueFullPolicy", yaml: "fallback_passthrough", group: "queue", default: "true", schema: C.fallbackPassthrough,
    hot: "fallback_enabled_passthrough", doc: "seed name for the same choice: true = passthrough, false = reject",
    note: ["SIDECAR_QUEUE_FULL_POLICY wins when both are set."]
  },
  SIDECAR_LOW_TIMEOUT: {
    field: "lowTimeout", yaml: "low_timeout", group: "queue", default: "2", schema: C.seconds, hot: "low_priority_timeout",
    doc: "seconds a low-priority request at the head of the queue waits for a token before a 429"
  },
  SIDECAR_QUEUE_TIMEOUT: {
    field: "queueTimeout", yaml: "queue_timeout", group: "queue", default: undefined, defaultFrom: "SIDECAR_TIMEOUT", schema: C.seconds,
    doc: "longest total wait in the queue, s"
  },
  SIDECAR_FAIRNESS: {
    field: "fairness", yaml: "fairness", group: "queue", default: "on", schema: C.onOff,
    doc: "round-robin between clients inside a priority level",
    note: ["A client is its X-Client-Id, else a hash of its own Authorization, else its address."]
  },
  SIDECAR_MAX_CLIENTS: {
    field: "maxClients", yaml: "max_clients", group: "queue", default: "1000", schema: C.positiveInt,
    doc: "most clients tracked at once for fairness and per-client limits"
  },
  SIDECAR_CLIENTS: {
    field: "clients", yaml: "clients", group: "queue", default: "{}", schema: C.clientLimits, hot: "clients",
    doc: "per-client limits as JSON (a mapping in YAML): {id: {rpm, max_queued, max_priority}}; `default` for unnamed clients",
    note: [
      "rpm: the client's own rate (its requests over it wait; burst one minute's worth);",
      "max_queued: its queued requests at most (429 with Retry-After beyond); max_priority: the highest",
      "X-Priority it may claim (a higher claim is lowered). Unnamed clients without a default: unlimited."
    ]
  },
  SIDECAR_TIMEOUT: {
    field: "timeout", yaml: "timeout", group: "requests", default: "300", schema: C.seconds,
    doc: "upstream timeout (connect, headers, stream idle), s"
  },
  SIDECAR_HEADERS_TIMEOUT: {
    field: "headersTimeout", yaml: "headers_timeout", group: "requests", default: "10", schema: C.seconds,
    doc: "time to receive a request's head, s (408 after)"
  },
  SIDECAR_BODY_TIMEOUT: {
    field: "bodyTimeout", yaml: "body_timeout", group: "requests", default: "30", schema: C.seconds,
    doc: "idle time while receiving a request body, s (408 after)"
  },
  SIDECAR_MAX_HEADERS: {
    field: "maxHeaders", yaml: "max_headers", group: "requests", default: "100", schema: C.positiveInt,
    doc: "request header count limit (431 above)"
  },
  SIDECAR_MAX_BODY_BYTES: {
    field: "maxBodyBytes", yaml: "max_body_bytes", group: "requests", default: "10485760", schema: C.positiveInt,
    doc: "request body limit in bytes (413 above)"
  },
  SIDECAR_DRAIN_TIMEOUT: {
    field: "drainTimeout", yaml: "drain_timeout", group: "lifecycle and operations", default: "25", schema: C.seconds,
    doc: "graceful shutdown budget for in-flight calls, s",
    note: [
      "Keep the supervisor's stop timeout above it (systemd TimeoutStopSec=35, docker stop -t 35,",
      "terminationGracePeriodSeconds: 35)."
    ]
  },
  SIDECAR_LOG_LEVEL: {
    field: "logLevel", yaml: "log_level", group: "lifecycle and operations", default: "INFO", schema: C.logLevel,
    doc: "log level"
  },
  SIDECAR_ADMIN_TOKEN: {
    field: "adminToken", yaml: "admin_token", group: "lifecycle and operations", default: undefined, schema: C.secret, secret: true,
    doc: "admin bearer token; unset = admin writes from loopback only"
  }
} as const satisfies Record<`SIDECAR_${string}`, Setting>

export type SettingName = keyof typeof settings

/** The same entries, typed for generic code (loops, look-ups by name). */
export const table: Readonly<Record<SettingName, Setting>> = settings
export const settingNames = Object.keys(settings) as ReadonlyArray<SettingName>

/** Variables read by libraries, documented beside the settings. */
export const externalVariables = [
  { name: "OTEL_EXPORTER_OTLP_ENDPOINT", doc: "OpenTelemetry OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318; unset = no trace export" },
  { name: "OTEL_SERVICE_NAME", doc: "service name on exported spans (default: nvidia-sidecar)" }
] as const

/** A YAML key, by env name or short name, any case. */
export const settingForKey = (key: string): SettingName | undefined => {
  const k = key.trim()
  return settingNames.find((name) => name === k.toUpperCase() || table[name].yaml === k.toLowerCase())
}

/** The candidate closest to `name` (Damerau-Levenshtein), if it is close enough to be a likely typo. */
export const closest = <A extends string>(name: string, candidates: ReadonlyArray<A>): A | undefined => {
  const core = (s: string) => s.toUpperCase().replace(/^SIDECAR_/, "")
  let best: { readonly candidate: A; readonly distance: number } | undefined
  for (const candidate of candidates) {
    const distance = editDistance(core(name), core(candidate))
    if (best === undefined || distance < best.distance) best = { candidate, distance }
  }
  if (best === undefined) return undefined
  const c = core(best.candidate)
  const near = best.distance <= Math.max(2, Math.floor(c.length / 3))
  const part = core(name).length >= 3 && (c.includes(core(name)) || core(name).includes(c))
  return near || part ? best.candidate : undefined
}

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps. */
function editDistance(a: string, b: string): number {
  const width = b.length + 1
  const d = new Array<number>((a.length + 1) * width).fill(0)
  const at = (i: number, j: number) => d[i * width + j] ?? 0
  for (let i = 0; i <= a.length; i++) d[i * width] = i
  for (let j = 0; j <= b.length; j++) d[j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1)
      d[i * width + j] = v
    }
  }
  return at(a.length, b.length)
}
