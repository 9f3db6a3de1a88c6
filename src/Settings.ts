/**
 * Every setting: its environment name, default and meaning. `--help`, the YAML loader,
 * `.env.example` checks and the README table all read this one list.
 */
export const settings = {
  SIDECAR_HOST: { default: "127.0.0.1", doc: "listen address (loopback by default)" },
  SIDECAR_PORT: { default: "9190", doc: "proxy port" },
  SIDECAR_METRICS_PORT: { default: "9191", doc: "Prometheus /metrics port (must differ)" },
  SIDECAR_UPSTREAM: { default: "https://integrate.api.nvidia.com/v1", doc: "rate-limited upstream" },
  SIDECAR_PASSTHROUGH_UPSTREAM: { default: undefined, doc: "upstream for non-alias models (unthrottled)" },
  SIDECAR_API_KEY: { default: undefined, doc: "upstream API key (never logged)" },
  SIDECAR_RATE_RPM: { default: "40", doc: "requests per minute" },
  SIDECAR_BUCKET_CAPACITY: { default: "40", doc: "token bucket burst" },
  SIDECAR_TIMEOUT: { default: "300", doc: "upstream timeout (connect, headers, stream idle), s" },
  SIDECAR_QUEUE_MAX: { default: "500", doc: "queue bound" },
  SIDECAR_QUEUE_FULL_POLICY: { default: undefined, doc: "passthrough | reject | drop_lowest (default passthrough)" },
  SIDECAR_FALLBACK_PASSTHROUGH: { default: "true", doc: "seed name; false = reject when the policy is unset" },
  SIDECAR_LOW_TIMEOUT: { default: "2", doc: "low-priority token wait, s" },
  SIDECAR_MAX_INFLIGHT: { default: "64", doc: "concurrent upstream calls" },
  SIDECAR_MAX_RETRIES: { default: "2", doc: "internal retries of an upstream 429" },
  SIDECAR_QUEUE_TIMEOUT: { default: undefined, doc: "longest total queue wait, s (default: SIDECAR_TIMEOUT)" },
  SIDECAR_MAX_BODY_BYTES: { default: "10485760", doc: "request body limit (413 above)" },
  SIDECAR_DRAIN_TIMEOUT: { default: "25", doc: "graceful shutdown budget for in-flight calls, s" },
  SIDECAR_LOG_LEVEL: { default: "INFO", doc: "TRACE | DEBUG | INFO | WARNING | ERROR | NONE" },
  SIDECAR_ADMIN_TOKEN: { default: undefined, doc: "admin bearer token; unset = admin writes from loopback only" },
  SIDECAR_GATEWAY_ALIASES: { default: "nvidia,nvidia-gateway,nvidiavx,nvidiavx18088980513", doc: "model prefixes that are rate-limited" }
} as const satisfies Record<string, { readonly default: string | undefined; readonly doc: string }>

export type SettingName = keyof typeof settings

/** YAML keys may be the env name or its short form: `rate_rpm` = `SIDECAR_RATE_RPM`. */
export const settingName = (key: string): string => {
  const upper = key.trim().toUpperCase()
  return upper.startsWith("SIDECAR_") ? upper : `SIDECAR_${upper}`
}
