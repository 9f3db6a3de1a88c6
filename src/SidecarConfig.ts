import { Context, Duration, Effect, Layer, LogLevel, Option, ParseResult, Redacted, Schema } from "effect"
import { ConfigInvalid } from "./ConfigInvalid.js"
import { settings, type SettingName } from "./Settings.js"

export type QueueFullPolicy = "passthrough" | "reject" | "drop_lowest"

export interface SidecarConfigShape {
  readonly host: string
  readonly port: number
  readonly metricsPort: number
  readonly upstream: string
  readonly passthroughUpstream: Option.Option<string>
  readonly apiKey: Option.Option<Redacted.Redacted>
  readonly rateRpm: number
  readonly bucketCapacity: number
  readonly timeout: Duration.Duration
  readonly queueMax: number
  readonly queueFullPolicy: QueueFullPolicy
  readonly lowTimeout: Duration.Duration
  readonly maxInflight: number
  readonly maxRetries: number
  readonly queueTimeout: Duration.Duration
  readonly maxBodyBytes: number
  readonly drainTimeout: Duration.Duration
  readonly logLevel: LogLevel.LogLevel
  readonly adminToken: Option.Option<Redacted.Redacted>
  readonly gatewayAliases: ReadonlyArray<string>
}

/** Validated configuration. Hot-changeable values live in the services that use them. */
export class SidecarConfig extends Context.Tag("sidecar/SidecarConfig")<SidecarConfig, SidecarConfigShape>() {
  /** defaults < YAML file < environment; every bad field is reported at once. */
  static readonly load = (
    env: Readonly<Record<string, string | undefined>>,
    file: Readonly<Record<string, string>> = {}
  ): Effect.Effect<SidecarConfigShape, ConfigInvalid> =>
    Effect.gen(function*() {
      const raw: Record<string, string> = {}
      for (const [name, setting] of Object.entries(settings)) {
        const value = env[name] ?? file[name] ?? setting.default
        if (value !== undefined && value !== "") raw[name] = value
      }
      const decoded = yield* Schema.decodeUnknown(RawSettings, { errors: "all", onExcessProperty: "ignore" })(raw).pipe(
        Effect.mapError((error) => new ConfigInvalid({ problems: describe(error) }))
      )
      const config = fromRaw(decoded, raw)
      if (config.port !== 0 && config.port === config.metricsPort) {
        return yield* new ConfigInvalid({ problems: ["SIDECAR_METRICS_PORT: must differ from SIDECAR_PORT"] })
      }
      return config
    })

  static readonly layerFrom = (env: Readonly<Record<string, string | undefined>>, file?: Readonly<Record<string, string>>) =>
    Layer.effect(SidecarConfig, SidecarConfig.load(env, file))

  /** Tests state only the values they care about. */
  static readonly layerTest = (overrides: Partial<SidecarConfigShape> = {}) =>
    Layer.effect(SidecarConfig, Effect.map(SidecarConfig.load({ SIDECAR_PORT: "0", SIDECAR_METRICS_PORT: "0" }), (c) => ({
      ...c,
      upstream: "http://127.0.0.1:9/v1",
      apiKey: Option.some(Redacted.make("test-key")),
      ...overrides
    })))
}

const numeric = (check: (n: number) => boolean, expected: string) =>
  Schema.NumberFromString.pipe(Schema.filter((n) => check(n) || `expected ${expected}, got ${n}`))

const Port = numeric((n) => Number.isInteger(n) && n >= 0 && n <= 65535, "a port 0-65535")
const Positive = numeric((n) => n > 0, "a number > 0")
const PositiveInt = numeric((n) => Number.isInteger(n) && n > 0, "an integer > 0")
const NonNegativeInt = numeric((n) => Number.isInteger(n) && n >= 0, "an integer >= 0")
const HttpUrl = Schema.String.pipe(Schema.filter((s) => {
  try {
    const url = new URL(s)
    return url.protocol === "http:" || url.protocol === "https:" || `expected an http(s) URL, got ${s}`
  } catch {
    return `expected an http(s) URL, got ${s}`
  }
}))
const Bool = Schema.transform(
  Schema.Literal("true", "false", "1", "0", "yes", "no", "TRUE", "FALSE", "True", "False"),
  Schema.Boolean,
  { strict: true, decode: (s) => ["true", "1", "yes"].includes(s.toLowerCase()), encode: (b) => (b ? "true" : "false") }
)
const Policy = Schema.Literal("passthrough", "reject", "drop_lowest").annotations({
  message: (issue) => `expected passthrough, reject or drop_lowest, got ${String(issue.actual)}`
})
const Level = Schema.transform(
  Schema.String.pipe(Schema.filter((s) => levels.includes(s.toUpperCase()) || `expected one of ${levels.join(", ")}`)),
  Schema.String,
  { strict: true, decode: (s) => s.toUpperCase(), encode: (s) => s }
)
const levels = ["TRACE", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "FATAL", "NONE"]
const Aliases = Schema.String.pipe(Schema.filter((s) => s.split(",").some((a) => a.trim() !== "") || "expected a comma-separated list"))

const RawSettings = Schema.Struct({
  SIDECAR_HOST: Schema.NonEmptyTrimmedString,
  SIDECAR_PORT: Port,
  SIDECAR_METRICS_PORT: Port,
  SIDECAR_UPSTREAM: HttpUrl,
  SIDECAR_PASSTHROUGH_UPSTREAM: Schema.optional(HttpUrl),
  SIDECAR_API_KEY: Schema.optional(Schema.String),
  SIDECAR_RATE_RPM: Positive,
  SIDECAR_BUCKET_CAPACITY: PositiveInt,
  SIDECAR_TIMEOUT: Positive,
  SIDECAR_QUEUE_MAX: NonNegativeInt,
  SIDECAR_QUEUE_FULL_POLICY: Schema.optional(Policy),
  SIDECAR_FALLBACK_PASSTHROUGH: Bool,
  SIDECAR_LOW_TIMEOUT: Positive,
  SIDECAR_MAX_INFLIGHT: PositiveInt,
  SIDECAR_MAX_RETRIES: NonNegativeInt,
  SIDECAR_QUEUE_TIMEOUT: Schema.optional(Positive),
  SIDECAR_MAX_BODY_BYTES: PositiveInt,
  SIDECAR_DRAIN_TIMEOUT: Positive,
  SIDECAR_LOG_LEVEL: Level,
  SIDECAR_ADMIN_TOKEN: Schema.optional(Schema.String),
  SIDECAR_GATEWAY_ALIASES: Aliases
} satisfies Record<SettingName, Schema.Schema.All | Schema.PropertySignature.All>)

type Raw = typeof RawSettings.Type

function fromRaw(r: Raw, raw: Readonly<Record<string, string>>): SidecarConfigShape {
  const timeout = Duration.seconds(r.SIDECAR_TIMEOUT)
  // The seed's boolean maps onto the policy only when the policy itself is not set.
  const policy = r.SIDECAR_QUEUE_FULL_POLICY ?? (raw.SIDECAR_FALLBACK_PASSTHROUGH !== undefined && !r.SIDECAR_FALLBACK_PASSTHROUGH
    ? "reject"
    : "passthrough")
  return {
    host: r.SIDECAR_HOST,
    port: r.SIDECAR_PORT,
    metricsPort: r.SIDECAR_METRICS_PORT,
    upstream: r.SIDECAR_UPSTREAM,
    passthroughUpstream: Option.fromNullable(r.SIDECAR_PASSTHROUGH_UPSTREAM),
    apiKey: Option.map(Option.fromNullable(r.SIDECAR_API_KEY), Redacted.make),
    rateRpm: r.SIDECAR_RATE_RPM,
    bucketCapacity: r.SIDECAR_BUCKET_CAPACITY,
    timeout,
    queueMax: r.SIDECAR_QUEUE_MAX,
    queueFullPolicy: policy,
    lowTimeout: Duration.seconds(r.SIDECAR_LOW_TIMEOUT),
    maxInflight: r.SIDECAR_MAX_INFLIGHT,
    maxRetries: r.SIDECAR_MAX_RETRIES,
    queueTimeout: r.SIDECAR_QUEUE_TIMEOUT === undefined ? timeout : Duration.seconds(r.SIDECAR_QUEUE_TIMEOUT),
    maxBodyBytes: r.SIDECAR_MAX_BODY_BYTES,
    drainTimeout: Duration.seconds(r.SIDECAR_DRAIN_TIMEOUT),
    logLevel: toLogLevel(r.SIDECAR_LOG_LEVEL),
    adminToken: Option.map(Option.fromNullable(r.SIDECAR_ADMIN_TOKEN), Redacted.make),
    gatewayAliases: r.SIDECAR_GATEWAY_ALIASES.split(",").map((a) => a.trim().toLowerCase()).filter((a) => a !== "")
  }
}

function toLogLevel(name: string): LogLevel.LogLevel {
  switch (name) {
    case "TRACE": return LogLevel.Trace
    case "DEBUG": return LogLevel.Debug
    case "WARN":
    case "WARNING": return LogLevel.Warning
    case "ERROR": return LogLevel.Error
    case "FATAL": return LogLevel.Fatal
    case "NONE": return LogLevel.None
    default: return LogLevel.Info
  }
}

/** One line per bad field, `NAME: problem`; values of secret fields are never echoed. */
function describe(error: ParseResult.ParseError): ReadonlyArray<string> {
  const byField = new Map<string, string>()
  for (const issue of ParseResult.ArrayFormatter.formatErrorSync(error)) {
    const name = String(issue.path[0] ?? "config")
    const secret = name === "SIDECAR_API_KEY" || name === "SIDECAR_ADMIN_TOKEN"
    if (!byField.has(name)) byField.set(name, `${name}: ${secret ? "invalid value" : issue.message}`)
  }
  return [...byField.values()]
}
