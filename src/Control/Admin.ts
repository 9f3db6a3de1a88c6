import { Duration, Effect, Either, Option, Redacted, Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import { PriorityQueue } from "../Admission/PriorityQueue.js"
import { RateLimiter } from "../Admission/RateLimiter.js"
import { AdminForbidden, AdminUnauthorized, InvalidPatch } from "../Common/Errors.js"
import { toErrorResponse } from "../Common/ErrorResponse.js"
import { parseJsonBody, readBody } from "../DataPath/Body.js"
import { writeError, writeJson } from "../DataPath/Reply.js"
import { HotPatch, hotChanges, patchProblem } from "../Config/HotSettings.js"
import { maskUserinfo } from "../Config/SettingCodecs.js"
import { Reconfigure } from "./Reconfigure.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"

/** `GET/POST /api/admin/config`: read (key masked) and hot-change the limits, the per-client ones included. */
export const makeAdmin = Effect.gen(function*() {
  const config = yield* SidecarConfig
  const bucket = yield* RateLimiter
  const queue = yield* PriorityQueue
  const reconfigure = yield* Reconfigure

  const current = Effect.gen(function*() {
    const b = yield* bucket.snapshot
    const q = yield* queue.settings
    return {
      rate_rpm: b.baseRpm,
      bucket_capacity: b.capacity,
      queue_max_size: q.max,
      queue_full_policy: q.policy,
      fallback_enabled_passthrough: q.policy === "passthrough",
      low_priority_timeout: Duration.toSeconds(q.lowTimeout),
      clients: yield* queue.clientLimits,
      upstream: maskUserinfo(config.upstream),
      passthrough_upstream: Option.getOrNull(Option.map(config.passthroughUpstream, maskUserinfo)),
      api_key: Option.match(config.apiKey, { onNone: () => null, onSome: mask }),
      admin_token_set: Option.isSome(config.adminToken),
      admin_writes: writesDisabled ? "disabled" : "enabled",
      timeout: Duration.toSeconds(config.timeout),
      queue_timeout: Duration.toSeconds(config.queueTimeout),
      max_inflight: config.maxInflight,
      max_retries: config.maxRetries
    }
  })

  // Listening beyond loopback without a token, the peer address proves nothing (every container
  // of a pod shares loopback, proxies forward): writes are off until a token is set.
  const writesDisabled = Option.isNone(config.adminToken) && !isLoopbackHost(config.host)

  /** With a token set, reads and writes need it; without one, writes come from loopback only. */
  const authorize = (req: IncomingMessage, write: boolean) =>
    Effect.gen(function*() {
      const origin = req.headers.origin
      if (origin !== undefined && !sameOrigin(origin, req.headers.host)) return yield* new AdminForbidden({ reason: "foreign_origin" })
      if (Option.isNone(config.adminToken)) {
        if (!write) return
        if (writesDisabled) return yield* new AdminForbidden({ reason: "writes_disabled" })
        if (!isLoopback(req.socket.remoteAddress)) return yield* new AdminUnauthorized({ reason: "not_loopback" })
        return
      }
      const presented = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "")?.[1]?.trim()
      if (presented === undefined || presented === "") return yield* new AdminUnauthorized({ reason: "missing_token" })
      if (!sameSecret(presented, Redacted.value(config.adminToken.value))) return yield* new AdminForbidden({ reason: "wrong_token" })
    })

  const apply = (req: IncomingMessage) =>
    Effect.gen(function*() {
      yield* authorize(req, true)
      const body = yield* Effect.flatten(Effect.promise(() => readBody(req, { maxBytes: 64 * 1024, idleMs: Duration.toMillis(config.bodyTimeout) })))
      const { json } = yield* parseJsonBody(body)
      const change = hotChanges(yield* Schema.decodeUnknownEither(HotPatch, { onExcessProperty: "error" })(json).pipe(
        Either.mapLeft((error) => new InvalidPatch(patchProblem(error)))
      ))
      const before = yield* current
      yield* reconfigure.apply(change)
      const after = yield* current
      yield* Effect.logWarning({ msg: "admin_config_changed", peer: req.socket.remoteAddress ?? "unknown", changes: diff(before, after) })
      return after
    })

  return (req: IncomingMessage, res: ServerResponse) =>
    req.method === "GET"
      ? Effect.zipRight(authorize(req, false), current).pipe(
        Effect.match({ onFailure: (error) => writeError(res, toErrorResponse(error)), onSuccess: (c) => writeJson(res, 200, c) })
      )
      : req.method === "POST"
      ? apply(req).pipe(
        Effect.match({
          onFailure: (error) => (error._tag === "ClientGone" ? undefined : writeError(res, toErrorResponse(error))),
          onSuccess: (c) => writeJson(res, 200, c)
        })
      )
      : Effect.sync(() => writeJson(res, 405, { error: { message: "Use GET or POST", type: "invalid_request_error", code: "method_not_allowed" } }, { allow: "GET, POST" }))
})

/** Compares digests so neither content nor length leaks through timing. */
function sameSecret(presented: string, expected: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s).digest()
  return timingSafeEqual(digest(presented), digest(expected))
}

export function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (address === "::1" || /^(::ffff:)?127\./.test(address))
}

/** A listen address that only this machine can reach. */
export const isLoopbackHost = (host: string): boolean => host === "localhost" || isLoopback(host.replace(/^\[|\]$/g, ""))

function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host === host
  } catch {
    return false
  }
}

function mask(key: Redacted.Redacted): string {
  const value = Redacted.value(key)
  return value.length >= 12 ? `****${value.slice(-4)}` : "****"
}

function diff(before: Record<string, unknown>, after: Record<string, unknown>): Record<string, string> {
  const changes: Record<string, string> = {}
  for (const key of Object.keys(after)) {
    if (JSON.stringify(before[key]) !== JSON.stringify(after[key])) changes[key] = `${JSON.stringify(before[key])} -> ${JSON.stringify(after[key])}`
  }
  return changes
}

