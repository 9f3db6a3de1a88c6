import { Schema } from "effect"

/** Request path is not a clean `/v1/...` path (traversal, absolute-URL target, bad encoding). */
export class InvalidPath extends Schema.TaggedError<InvalidPath>()("InvalidPath", {
  reason: Schema.String
}) {}

export class InvalidJson extends Schema.TaggedError<InvalidJson>()("InvalidJson", {
  reason: Schema.String
}) {}

export class BodyTooLarge extends Schema.TaggedError<BodyTooLarge>()("BodyTooLarge", {
  limitBytes: Schema.Number
}) {}

/** The client sent its request too slowly: headers or body stalled. */
export class RequestTimeout extends Schema.TaggedError<RequestTimeout>()("RequestTimeout", {
  phase: Schema.Literal("headers", "body")
}) {}

/** More request headers than SIDECAR_MAX_HEADERS, or a head too large to parse. */
export class TooManyHeaders extends Schema.TaggedError<TooManyHeaders>()("TooManyHeaders", {
  limit: Schema.Number
}) {}

/** A browser's request the sidecar will not serve: unknown Host, foreign Origin, or a non-JSON body. */
export class RequestRefused extends Schema.TaggedError<RequestRefused>()("RequestRefused", {
  reason: Schema.Literal("host_not_allowed", "origin_not_allowed", "unsupported_media_type"),
  detail: Schema.String
}) {}

export class RouteNotFound extends Schema.TaggedError<RouteNotFound>()("RouteNotFound", {
  method: Schema.String,
  path: Schema.String
}) {}

export class UpstreamFailed extends Schema.TaggedError<UpstreamFailed>()("UpstreamFailed", {
  reason: Schema.String
}) {}

export class UpstreamTimeout extends Schema.TaggedError<UpstreamTimeout>()("UpstreamTimeout", {
  phase: Schema.Literal("connect", "headers", "body")
}) {}

/** Our own 429: the request could not be admitted in time, or upstream kept throttling. */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  reason: Schema.Literal("queue_timeout", "low_priority_timeout", "token_timeout", "client_queue_full"),
  retryAfterMs: Schema.Number
}) {}

export class QueueFull extends Schema.TaggedError<QueueFull>()("QueueFull", {
  capacity: Schema.Number
}) {}

/** Pushed out of a full queue by a higher-priority newcomer (`drop_lowest`). */
export class Evicted extends Schema.TaggedError<Evicted>()("Evicted", {}) {}

/** The shared limit's Redis is unreachable and SIDECAR_REDIS_FAILURE=closed: limited requests are refused until it is back. */
export class SharedLimitUnavailable extends Schema.TaggedError<SharedLimitUnavailable>()("SharedLimitUnavailable", {
  retryAfterMs: Schema.Number
}) {}

export class ShuttingDown extends Schema.TaggedError<ShuttingDown>()("ShuttingDown", {}) {}

export class AdminUnauthorized extends Schema.TaggedError<AdminUnauthorized>()("AdminUnauthorized", {
  reason: Schema.Literal("missing_token", "not_loopback")
}) {}

export class AdminForbidden extends Schema.TaggedError<AdminForbidden>()("AdminForbidden", {
  reason: Schema.Literal("wrong_token", "foreign_origin", "writes_disabled")
}) {}

export class InvalidPatch extends Schema.TaggedError<InvalidPatch>()("InvalidPatch", {
  field: Schema.String,
  reason: Schema.String
}) {}

/** The client went away mid-request: there is nobody left to answer (not an HTTP error). */
export class ClientGone extends Schema.TaggedError<ClientGone>()("ClientGone", {}) {}

/** A bug inside the runtime (a defect, or an interruption nobody asked for): answered 500 and logged. */
export class Defect extends Schema.TaggedError<Defect>()("Defect", {}) {}

/** Ways a queued request can fail to be admitted. */
export type AdmissionError = RateLimited | QueueFull | Evicted | ShuttingDown | SharedLimitUnavailable

export type SidecarError =
  | InvalidPath
  | InvalidJson
  | BodyTooLarge
  | RequestTimeout
  | TooManyHeaders
  | RequestRefused
  | RouteNotFound
  | UpstreamFailed
  | UpstreamTimeout
  | AdmissionError
  | AdminUnauthorized
  | AdminForbidden
  | InvalidPatch
  | Defect
