import { Headers, HttpTraceContext } from "@effect/platform"
import { Clock, Effect, Either, Exit, FiberId, FiberRef, LogLevel, Option, Runtime, type Tracer } from "effect"
import { randomUUID } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import { type AdmissionError, ClientGone, type SidecarError } from "../Errors.js"
import { Metrics } from "../Metrics.js"
import { fromHeader, type Priority } from "../Priority.js"
import { RequestQueue, type Admitted } from "../RequestQueue.js"
import { classify } from "../Routing.js"
import { SidecarConfig } from "../SidecarConfig.js"
import { TokenBucket, type TokenBucketSnapshot } from "../TokenBucket.js"
import { Upstream, type UpstreamRequest } from "../Upstream.js"
import { parseJsonBody, readBody } from "./Body.js"
import { retryAfterSeconds, toErrorResponse } from "./ErrorResponse.js"
import { requestHeaders } from "./Headers.js"
import { pipeUpstream, writeError } from "./Reply.js"

// Endpoints whose body must be JSON; other `/v1/...` bodies must be JSON only when they say so.
const jsonEndpoints = new Set(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])

/** Status recorded for a request whose client went away before its answer (nginx's convention). */
const CLIENT_CLOSED = 499

/**
 * Builds the `/v1/...` handler. The data path is plain Node (body buffer, undici call, pipe):
 * Effect fibers per chunk or per await cost 2-3x the CPU of the whole proxy (see the README's
 * benchmarks). Effect runs the control steps through the application's runtime: admission
 * (queue, token bucket, in-flight slots), the bucket's feedback, metrics and logs. `signal`
 * aborts when the client leaves or shutdown runs out of time: the wait or the upstream call stops.
 */
export const makeProxy = Effect.gen(function*() {
  const config = yield* SidecarConfig
  const upstream = yield* Upstream
  const queue = yield* RequestQueue
  const bucket = yield* TokenBucket
  const metrics = yield* Metrics
  const clock = yield* Effect.clock
  const runtime = yield* Effect.runtime<never>()
  const runSync = Runtime.runSync(runtime)
  const runFork = Runtime.runFork(runtime)
  const routing = { gatewayAliases: config.gatewayAliases, hasPassthrough: Option.isSome(config.passthroughUpstream) }
  const tracing = yield* FiberRef.get(FiberRef.currentTracerEnabled)
  // The level is fixed at start-up; below INFO the completion line is not even built.
  const logCompleted = LogLevel.lessThanEqual(yield* FiberRef.get(FiberRef.currentMinimumLogLevel), LogLevel.Info)
  const now = () => clock.unsafeCurrentTimeMillis()

  // Spans only exist when tracing is on: each costs an allocation and, by default, a stack capture.
  const startSpan = (name: string, options: Tracer.SpanOptions): Tracer.Span | undefined =>
    tracing ? runSync(Effect.makeSpan(name, { ...options, captureStackTrace: false })) : undefined
  const endSpan = (span: Tracer.Span | undefined, attributes: Record<string, unknown> = {}) => {
    if (span === undefined) return
    for (const [key, value] of Object.entries(attributes)) span.attribute(key, value)
    span.end(clock.unsafeCurrentTimeNanos(), Exit.void)
  }

  /**
   * Admission with the bucket state for the response headers. Fast path: one synchronous
   * runtime call; otherwise the queue's own fiber, interrupted if the client leaves.
   */
  const admit = (trail: Trail, seq: number | undefined, signal: AbortSignal): Promise<Either.Either<Admission, AdmissionError | ClientGone>> => {
    const span = startSpan("sidecar.queue_wait", { parent: trail.span, attributes: { "sidecar.priority": trail.priority } })
    const immediate = span === undefined ? runSync(admitNow(seq)) : Option.none()
    if (Option.isSome(immediate)) return Promise.resolve(Either.right(immediate.value))
    const waiting = Effect.zip(queue.admit(trail.priority, seq), bucket.snapshot)
    const fiber = runFork(span === undefined ? waiting : Effect.withParentSpan(waiting, span))
    const onAbort = () => fiber.unsafeInterruptAsFork(FiberId.none)
    signal.addEventListener("abort", onAbort, { once: true })
    return new Promise((resolve) =>
      fiber.addObserver((exit) => {
        signal.removeEventListener("abort", onAbort)
        endSpan(span)
        resolve(Exit.match(exit, {
          onSuccess: Either.right,
          onFailure: (cause) => Either.left(cause._tag === "Fail" ? cause.error : clientGone)
        }))
      })
    )
  }

  const admitNow = (seq: number | undefined): Effect.Effect<Option.Option<Admission>> =>
    Effect.flatMap(queue.admitNow(seq), (admitted) =>
      Option.isNone(admitted)
        ? Effect.succeedNone
        : Effect.map(bucket.snapshot, (b) => Option.some([admitted.value, b] as const)))

  // The upstream call; with tracing on it carries our traceparent, with tracing off the
  // client's own traceparent passes through untouched. Its bookkeeping waits for `finished`.
  const send = async (request: UpstreamRequest, signal: AbortSignal, trail: Trail) => {
    const span = startSpan("sidecar.upstream", { parent: trail.span, kind: "client", attributes: { "sidecar.provider": request.upstream } })
    const traced = span === undefined
      ? request
      : { ...request, headers: { ...request.headers, traceparent: HttpTraceContext.toHeaders(span).traceparent ?? "" } }
    const started = now()
    const result = await upstream.send(traced, signal)
    trail.upstream = { provider: request.upstream, status: Either.getOrUndefined(result)?.status ?? 0, seconds: (now() - started) / 1000 }
    endSpan(span, { "http.response.status_code": trail.upstream.status })
    return result
  }

  /** An upstream 429, before anything reaches the client: count it, feed the bucket, honour Retry-After. */
  const throttled = (answer: UpstreamAnswer, retryAfter: string | Array<string> | undefined) =>
    Effect.gen(function*() {
      yield* metrics.upstreamAnswered(answer.provider, answer.status, answer.seconds)
      yield* bucket.record("throttled")
      const pause = TokenBucket.retryAfterMillis(retryAfter, yield* Clock.currentTimeMillis)
      if (Option.isSome(pause)) yield* bucket.pauseFor(pause.value)
    })

  /** The rest of a request's bookkeeping, in one runtime call: bucket feedback, slot release, metrics, log line. */
  const finished = (trail: Trail, req: IncomingMessage, pathAndQuery: string, status: number, totalMs: number) =>
    Effect.gen(function*() {
      const answer = trail.upstream
      if (answer !== undefined) {
        yield* metrics.upstreamAnswered(answer.provider, answer.status, answer.seconds)
        if (trail.release !== undefined && answer.status !== 0) yield* bucket.record("ok")
      }
      if (trail.release !== undefined) {
        yield* trail.release
        yield* metrics.queueWait(trail.priority, trail.queueMs / 1000)
      }
      yield* metrics.requestCompleted(trail.priority, status)
      if (!logCompleted) return
      const b = trail.bucket ?? (yield* bucket.snapshot)
      yield* Effect.logInfo({
        msg: "request_completed",
        request_id: headerValue(req.headers["x-request-id"]) ?? randomUUID(),
        method: req.method,
        path: pathAndQuery,
        model: trail.model ?? null,
        priority: trail.priority,
        status,
        queue_ms: trail.queueMs,
        upstream_ms: Math.max(0, totalMs - trail.queueMs),
        total_ms: totalMs,
        retries: trail.retries,
        retreat_state: b.mode,
        effective_rpm: b.effectiveRpm
      })
    })

  // Queue + token bucket; upstream 429s are retried inside before any byte reaches the client.
  const limited = async (res: ServerResponse, request: UpstreamRequest, trail: Trail, signal: AbortSignal): Promise<Outcome> => {
    let seq: number | undefined
    for (let retries = 0;; retries++) {
      const admitted = await admit(trail, seq, signal)
      if (Either.isLeft(admitted)) return Either.left(admitted.left)
      const [admission, b] = admitted.right
      seq = admission.seq
      trail.release = admission.release
      trail.bucket = b
      trail.queueMs += admission.waitedMs
      trail.retries = retries
      const answer = await send(request, signal, trail)
      if (Either.isLeft(answer)) return Either.left(answer.left)
      const up = answer.right
      if (up.status === 429 && trail.upstream !== undefined) {
        runSync(throttled(trail.upstream, up.headers["retry-after"]))
        trail.upstream = undefined
        if (retries < config.maxRetries) {
          up.body.resume()
          runSync(admission.release)
          continue
        }
      }
      await pipeUpstream(res, up, limitHeaders(b, trail, up.status === 429 && up.headers["retry-after"] === undefined))
      return Either.right(up.status)
    }
  }

  const route = async (req: IncomingMessage, res: ServerResponse, pathAndQuery: string, trail: Trail, signal: AbortSignal): Promise<Outcome> => {
    const method = req.method ?? "GET"
    let body: Buffer | null = null
    if (method !== "GET" && method !== "HEAD") {
      const read = await readBody(req, config.maxBodyBytes)
      if (Either.isLeft(read)) return Either.left(read.left)
      body = read.right
    }
    const path = pathAndQuery.split("?", 1)[0] ?? pathAndQuery
    const mustBeJson = jsonEndpoints.has(path) || String(req.headers["content-type"] ?? "").includes("json")
    const parsed = body !== null && mustBeJson ? parseJsonBody(body) : Either.right({ json: undefined, model: undefined })
    if (Either.isLeft(parsed)) return Either.left(parsed.left)
    trail.model = parsed.right.model
    const routed = classify(trail.model, routing)
    const request: UpstreamRequest = {
      upstream: routed.upstream,
      method,
      pathAndQuery,
      headers: requestHeaders(req.headers),
      body: Option.match(routed.rewrittenModel, {
        onNone: () => body,
        onSome: (model) => Buffer.from(JSON.stringify({ ...parsed.right.json, model }))
      })
    }
    if (routed.limited) return limited(res, request, trail, signal)
    const answer = await send(request, signal, trail)
    if (Either.isLeft(answer)) return Either.left(answer.left)
    await pipeUpstream(res, answer.right, {})
    return Either.right(answer.right.status)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse, pathAndQuery: string, signal: AbortSignal) => {
    const started = now()
    const priority = fromHeader(req.headers["x-priority"])
    const trail: Trail = {
      priority,
      model: undefined,
      queueMs: 0,
      retries: 0,
      bucket: undefined,
      release: undefined,
      upstream: undefined,
      span: startSpan("sidecar.request", {
        kind: "server",
        parent: tracing ? incomingParent(req) : undefined,
        attributes: { "http.request.method": req.method ?? "", "url.path": pathAndQuery, "sidecar.priority": priority }
      })
    }
    // A defect still frees the slot and counts as 500 before it reaches the fiber.
    let status = 500
    try {
      const outcome = await route(req, res, pathAndQuery, trail, signal)
      status = Either.match(outcome, {
        onRight: (status) => status,
        onLeft: (error) => {
          if (error._tag === "ClientGone" || signal.aborted) return CLIENT_CLOSED
          const response = toErrorResponse(error)
          writeError(res, response)
          return response.status
        }
      })
    } finally {
      endSpan(trail.span, {
        "http.response.status_code": status,
        "sidecar.model": trail.model ?? "",
        "sidecar.queue_wait_ms": trail.queueMs,
        "sidecar.upstream_retries": trail.retries,
        "sidecar.retreat_state": trail.bucket?.mode ?? "normal"
      })
      runSync(finished(trail, req, pathAndQuery, status, now() - started))
    }
  }

  return handle
})

const clientGone = new ClientGone()

type Outcome = Either.Either<number, SidecarError | ClientGone>

/** What one request leaves behind for its metrics, log line and span. */
interface Trail {
  readonly priority: Priority
  readonly span: Tracer.Span | undefined
  model: string | undefined
  queueMs: number
  retries: number
  /** Bucket state at admission: the rate-limit headers and the log line. */
  bucket: TokenBucketSnapshot | undefined
  /** Frees the in-flight slot of the current admission (runs once however often it is called). */
  release: Effect.Effect<void> | undefined
  /** The last upstream answer (status 0: none) not yet recorded; recorded when the request finishes. */
  upstream: UpstreamAnswer | undefined
}

interface UpstreamAnswer {
  readonly provider: string
  readonly status: number
  readonly seconds: number
}

type Admission = readonly [Admitted, TokenBucketSnapshot]

const limitHeaders = (b: TokenBucketSnapshot, trail: Trail, addRetryAfter: boolean): Record<string, string> => {
  const resetMs = b.nextTokenInMs + b.pausedForMs
  return {
    "x-ratelimit-limit-requests": String(Math.round(b.effectiveRpm)),
    "x-ratelimit-remaining-requests": String(Math.floor(b.tokens)),
    "x-ratelimit-reset-requests": `${(resetMs / 1000).toFixed(3)}s`,
    "x-sidecar-queue-wait-ms": String(Math.round(trail.queueMs)),
    "x-sidecar-priority": trail.priority,
    "x-sidecar-upstream-retries": String(trail.retries),
    ...(addRetryAfter ? { "retry-after": retryAfterSeconds(resetMs) } : {})
  }
}

/** Continues the client's W3C trace when it sent one. */
const incomingParent = (req: IncomingMessage): Tracer.ExternalSpan | undefined =>
  req.headers.traceparent === undefined
    ? undefined
    : Option.getOrUndefined(HttpTraceContext.fromHeaders(Headers.fromInput({ traceparent: req.headers.traceparent })))

const headerValue = (value: string | ReadonlyArray<string> | undefined): string | undefined =>
  typeof value === "string" && value.length > 0 && value.length <= 200 ? value : undefined
