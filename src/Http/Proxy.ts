import { Headers, HttpTraceContext } from "@effect/platform"
import { Clock, Effect, Option, type Tracer } from "effect"
import { randomUUID } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { SidecarError, UpstreamFailed, UpstreamTimeout } from "../Errors.js"
import { Metrics } from "../Metrics.js"
import { fromHeader, type Priority } from "../Priority.js"
import { RequestQueue } from "../RequestQueue.js"
import { classify } from "../Routing.js"
import { SidecarConfig } from "../SidecarConfig.js"
import { TokenBucket } from "../TokenBucket.js"
import { Upstream, type UpstreamRequest, type UpstreamResponse } from "../Upstream.js"
import { parseJsonBody, readBody } from "./Body.js"
import { toErrorResponse } from "./ErrorResponse.js"
import { requestHeaders } from "./Headers.js"
import { pipeUpstream, writeError } from "./Reply.js"

// Endpoints whose body must be JSON; other `/v1/...` bodies must be JSON only when they say so.
const jsonEndpoints = new Set(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])

/** Builds the `/v1/...` handler: classify, queue + token when limited, forward, stream back. */
export const makeProxy = Effect.gen(function*() {
  const config = yield* SidecarConfig
  const upstream = yield* Upstream
  const queue = yield* RequestQueue
  const bucket = yield* TokenBucket
  const metrics = yield* Metrics
  const routing = { gatewayAliases: config.gatewayAliases, hasPassthrough: Option.isSome(config.passthroughUpstream) }

  // The upstream call is a client span; with tracing on it carries our traceparent, with
  // tracing off the client's own traceparent passes through untouched.
  const forward = (request: UpstreamRequest): Effect.Effect<UpstreamResponse, UpstreamFailed | UpstreamTimeout> =>
    Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const provider = request.upstream
      const span = yield* Effect.currentSpan.pipe(Effect.option)
      const traced = Option.isSome(span) && span.value.traceId !== "noop"
        ? { ...request, headers: { ...request.headers, traceparent: HttpTraceContext.toHeaders(span.value).traceparent ?? "" } }
        : request
      return yield* upstream.forward(traced).pipe(
        Effect.tapBoth({
          onFailure: () => Effect.flatMap(Clock.currentTimeMillis, (now) => metrics.upstreamAnswered(provider, 0, (now - started) / 1000)),
          onSuccess: (up) => Effect.flatMap(Clock.currentTimeMillis, (now) => metrics.upstreamAnswered(provider, up.status, (now - started) / 1000))
        })
      )
    }).pipe(Effect.withSpan("sidecar.upstream", { kind: "client", attributes: { "sidecar.provider": request.upstream } }))

  // Queue + token bucket; upstream 429s are retried inside before any byte reaches the client.
  const limited = (res: ServerResponse, request: UpstreamRequest, priority: Priority, log: LogFields) =>
    Effect.gen(function*() {
      let seq: number | undefined
      for (let retries = 0;; retries++) {
        const admitted = yield* queue.admit(priority, seq).pipe(Effect.withSpan("sidecar.queue_wait", { attributes: { "sidecar.priority": priority } }))
        seq = admitted.seq
        log.queueMs += admitted.waitedMs
        yield* metrics.queueWait(priority, admitted.waitedMs / 1000)
        log.retries = retries
        const up = yield* forward(request).pipe(Effect.onError(() => admitted.release))
        const throttled = up.status === 429
        yield* bucket.record(throttled ? "throttled" : "ok")
        if (throttled) {
          const pause = TokenBucket.retryAfterMillis(up.headers["retry-after"], yield* Clock.currentTimeMillis)
          if (Option.isSome(pause)) yield* bucket.pauseFor(pause.value)
          if (retries < config.maxRetries) {
            up.body.resume()
            yield* admitted.release
            continue
          }
        }
        const headers = yield* limitHeaders(priority, log.queueMs, retries, throttled && up.headers["retry-after"] === undefined)
        yield* pipeUpstream(res, up, headers).pipe(Effect.ensuring(admitted.release))
        return up.status
      }
    })

  const limitHeaders = (priority: Priority, queueMs: number, retries: number, addRetryAfter: boolean) =>
    Effect.map(bucket.snapshot, (b): Record<string, string> => ({
      "x-ratelimit-limit-requests": String(Math.round(b.effectiveRpm)),
      "x-ratelimit-remaining-requests": String(Math.floor(b.tokens)),
      "x-ratelimit-reset-requests": `${((b.nextTokenInMs + b.pausedForMs) / 1000).toFixed(3)}s`,
      "x-sidecar-queue-wait-ms": String(Math.round(queueMs)),
      "x-sidecar-priority": priority,
      "x-sidecar-upstream-retries": String(retries),
      ...(addRetryAfter ? { "retry-after": String(Math.max(1, Math.ceil((b.nextTokenInMs + b.pausedForMs) / 1000))) } : {})
    }))

  const route = (req: IncomingMessage, res: ServerResponse, pathAndQuery: string, priority: Priority, log: LogFields) =>
    Effect.gen(function*() {
      const method = req.method ?? "GET"
      const body = method === "GET" || method === "HEAD" ? null : yield* readBody(req, config.maxBodyBytes)
      const path = pathAndQuery.split("?", 1)[0] ?? pathAndQuery
      const mustBeJson = jsonEndpoints.has(path) || String(req.headers["content-type"] ?? "").includes("json")
      const parsed = body !== null && mustBeJson ? yield* parseJsonBody(body) : { json: undefined, model: undefined }
      log.model = parsed.model
      const routed = classify(parsed.model, routing)
      const request: UpstreamRequest = {
        upstream: routed.upstream,
        method,
        pathAndQuery,
        headers: requestHeaders(req.headers),
        body: Option.match(routed.rewrittenModel, {
          onNone: () => body,
          onSome: (model) => Buffer.from(JSON.stringify({ ...parsed.json, model }))
        })
      }
      if (routed.limited) return yield* limited(res, request, priority, log)
      const up = yield* forward(request)
      yield* pipeUpstream(res, up, {})
      return up.status
    })

  return (req: IncomingMessage, res: ServerResponse, pathAndQuery: string) =>
    Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const priority = fromHeader(req.headers["x-priority"])
      const requestId = headerValue(req.headers["x-request-id"]) ?? randomUUID()
      const log: LogFields = { model: undefined, queueMs: 0, retries: 0 }
      const b = yield* bucket.snapshot
      const status = yield* route(req, res, pathAndQuery, priority, log).pipe(
        Effect.catchAll((error: SidecarError) => {
          const response = toErrorResponse(error)
          writeError(res, response)
          return Effect.succeed(response.status)
        }),
        Effect.tap((status) =>
          Effect.annotateCurrentSpan({
            "http.response.status_code": status,
            "sidecar.model": log.model ?? "",
            "sidecar.queue_wait_ms": log.queueMs,
            "sidecar.upstream_retries": log.retries,
            "sidecar.retreat_state": b.mode
          })
        ),
        Effect.withSpan("sidecar.request", {
          kind: "server",
          parent: incomingParent(req),
          attributes: { "http.request.method": req.method ?? "", "url.path": pathAndQuery, "sidecar.priority": priority }
        })
      )
      const totalMs = (yield* Clock.currentTimeMillis) - started
      yield* metrics.requestCompleted(priority, status)
      yield* Effect.logInfo("request_completed").pipe(Effect.annotateLogs({
        request_id: requestId,
        method: req.method,
        path: pathAndQuery,
        model: log.model ?? null,
        priority,
        status,
        queue_ms: log.queueMs,
        upstream_ms: Math.max(0, totalMs - log.queueMs),
        total_ms: totalMs,
        retreat_state: b.mode,
        effective_rpm: b.effectiveRpm
      }))
    })
})

interface LogFields {
  model: string | undefined
  queueMs: number
  retries: number
}

/** Continues the client's W3C trace when it sent one. */
const incomingParent = (req: IncomingMessage): Tracer.ExternalSpan | undefined =>
  req.headers.traceparent === undefined
    ? undefined
    : Option.getOrUndefined(HttpTraceContext.fromHeaders(Headers.fromInput({ traceparent: req.headers.traceparent })))

const headerValue = (value: string | ReadonlyArray<string> | undefined): string | undefined =>
  typeof value === "string" && value.length > 0 && value.length <= 200 ? value : undefined

