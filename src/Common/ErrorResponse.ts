import { Option } from "effect"
import type { SidecarError } from "./Errors.js"

export interface ErrorResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

// The only place that knows which status each failure becomes. The body uses the
// OpenAI error envelope so existing clients parse it; messages never carry secrets.
export const toErrorResponse = (error: SidecarError): ErrorResponse => {
  switch (error._tag) {
    case "InvalidPath":
      return openAiError(400, "invalid_request_error", "invalid_path", `Invalid request path: ${error.reason}`)
    case "InvalidJson":
      return openAiError(400, "invalid_request_error", "invalid_json", `Request body is not valid JSON: ${error.reason}`)
    case "BodyTooLarge":
      return openAiError(413, "invalid_request_error", "body_too_large", `Request body exceeds ${error.limitBytes} bytes`, {
        connection: "close"
      })
    case "RequestTimeout":
      return openAiError(408, "invalid_request_error", "request_timeout", `The request ${error.phase} arrived too slowly`, { connection: "close" })
    case "TooManyHeaders":
      return openAiError(431, "invalid_request_error", "headers_too_large", `Request headers exceed the limit (${error.limit} headers)`, { connection: "close" })
    case "RequestRefused":
      return openAiError(error.reason === "unsupported_media_type" ? 415 : 403, "invalid_request_error", error.reason, error.detail)
    case "RouteNotFound":
      return openAiError(404, "invalid_request_error", "not_found", `No route for ${error.method} ${error.path}`)
    case "UpstreamFailed":
      return openAiError(502, "upstream_error", "bad_gateway", `Upstream request failed: ${error.reason}`)
    case "UpstreamTimeout":
      return openAiError(504, "upstream_error", "upstream_timeout", `Upstream timed out (${error.phase})`)
    case "RateLimited":
      return openAiError(429, "rate_limit_error", "rate_limit_exceeded", rateLimitedMessage[error.reason], retryAfterHeaders(error.retryAfterMs))
    case "QueueFull":
      return openAiError(503, "server_error", "queue_full", `Request queue is full (${error.capacity})`, retryAfterHeaders(1000))
    case "Evicted":
      return openAiError(503, "server_error", "queue_full", "Evicted from the full queue by a higher-priority request", retryAfterHeaders(1000))
    case "SharedLimitUnavailable":
      return openAiError(503, "server_error", "limit_backend_unavailable", "The shared rate limit (Redis) is unreachable; limited requests are refused until it is back", retryAfterHeaders(error.retryAfterMs))
    case "ShuttingDown":
      return openAiError(503, "server_error", "shutting_down", "Sidecar is shutting down", { ...retryAfterHeaders(1000), connection: "close" })
    case "AdminUnauthorized":
      return openAiError(401, "authentication_error", "unauthorized", error.reason === "missing_token"
        ? "Admin token required: send Authorization: Bearer <token>"
        : "Admin writes without SIDECAR_ADMIN_TOKEN are accepted from loopback only")
    case "AdminForbidden":
      return openAiError(403, "permission_error", "forbidden", adminForbidden[error.reason])
    case "Defect":
      return openAiError(500, "server_error", "internal_error", "The sidecar failed to handle this request; see its log")
    case "InvalidPatch":
      return openAiError(400, "invalid_request_error", "invalid_config", `Invalid value for ${error.field}: ${error.reason}`)
  }
}

const adminForbidden = {
  wrong_token: "Admin token is not valid",
  foreign_origin: "Cross-origin admin requests are refused",
  writes_disabled: "Admin writes are disabled: the sidecar listens beyond loopback and SIDECAR_ADMIN_TOKEN is not set"
} as const

const rateLimitedMessage = {
  queue_timeout: "Request waited too long in the sidecar queue",
  low_priority_timeout: "Low-priority request found no free token in time",
  token_timeout: "No rate-limit token became available in time",
  client_queue_full: "This client already has its maximum number of queued requests"
} as const

/** Parses a `Retry-After` (seconds or HTTP date) into millis from `now`. */
export const retryAfterMillis = (value: string | ReadonlyArray<string> | undefined, now: number): Option.Option<number> => {
  const raw = typeof value === "string" ? value : value?.[0]
  if (raw === undefined || raw.trim() === "") return Option.none()
  const seconds = Number(raw)
  if (Number.isFinite(seconds)) return seconds >= 0 ? Option.some(seconds * 1000) : Option.none()
  const at = Date.parse(raw)
  return Number.isNaN(at) ? Option.none() : Option.some(Math.max(0, at - now))
}

/** `Retry-After` in whole seconds, at least 1. */
export const retryAfterSeconds = (millis: number): string => String(Math.max(1, Math.ceil(millis / 1000)))

/** Our own 429/503 tell clients when to come back, in both header spellings. */
export const retryAfterHeaders = (millis: number): Record<string, string> => ({
  "retry-after": retryAfterSeconds(millis),
  "retry-after-ms": String(Math.max(0, Math.round(millis)))
})

const openAiError = (
  status: number,
  type: string,
  code: string,
  message: string,
  headers: Record<string, string> = {}
): ErrorResponse => ({
  status,
  headers: { "content-type": "application/json", ...(notRetryable.has(status) ? { "x-should-retry": "false" } : {}), ...headers },
  body: JSON.stringify({ error: { message, type, code } })
})

// The same request would fail the same way: SDKs (openai's honour `x-should-retry`) should not resend it.
const notRetryable = new Set([400, 401, 403, 404, 405, 413, 415, 431])
