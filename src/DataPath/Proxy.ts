import { Headers, HttpTraceContext } from "@effect/platform"
import { Context, Duration, Effect, Either, Exit, FiberRef, LogLevel, Option, type Tracer } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { Admission } from "../Admission/Admission.js"
import { type AdmissionRequest, isWaiting, type Permit, type UpstreamOutcome } from "../Admission/Permit.js"
import type { LimiterSnapshot } from "../Admission/RateLimiter.js"
import { type AdmissionError, ClientGone, InvalidJson, type SidecarError } from "../Common/Errors.js"
import { toErrorResponse } from "../Common/ErrorResponse.js"
import { fromHeader, type Priority } from "../Common/Priority.js"
import { clientAttributes, endExit, errorType, routeOf, serverAttributes } from "../Observability/HttpSpans.js"
import { Metrics } from "../Observability/Metrics.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import { parseJsonBody, readBody, readSmall } from "./Body.js"
import * as Bridge from "./Bridge.js"
import { clientIdOf } from "./ClientIdentity.js"
import { requestHeaders } from "./Headers.js"
import { ModelCatalog } from "./ModelCatalog.js"
import { replaceModel } from "./ModelRewrite.js"
import { type Piped, pipeUpstream, replyBuffered, writeError, writeJson } from "./Reply.js"
import { classify, jsonEndpoints } from "./Routing.js"
import { Upstream, type UpstreamRequest, type UpstreamResponse } from "./Upstream.js"


/** Status recorded for a request whose client went away before its answer (nginx's convention). */
const CLIENT_CLOSED = 499

/**
 * The `/v1/...` handler: plain Node from socket to socket (body buffer, undici call, pipe),
 * since an Effect fiber per request or per chunk costs 2-3x the CPU of the whole proxy (README,
 * benchmarks). It asks admission through the bridge and follows its verdicts; it decides
 * nothing itself. Runtime entries per request, each synchronous (none suspends): begin (limited
 * requests only), then one at the end (permit.finish with metrics and the log line). A queued
 * request adds one, run by whoever settles its ticket, and holds no fiber while it waits; leaving
 * the queue adds one; a consulted 429 adds finish + begin.
 * `signal` aborts when the client leaves or shutdown runs out of time.
 */
export const makeProxy = Effect.gen(function*() {
  const config = yield* SidecarConfig
  const upstream = yield* Upstream
  const admission = yield* Admission
  const catalog = yield* ModelCatalog
  const metrics = yield* Metrics
  const bridge = yield* Bridge.make
  const clock = yield* Effect.clock
  const tracer = yield* Effect.tracer
  const routing = { gatewayAliases: config.gatewayAliases, hasPassthrough: Option.isSome(config.passthroughUpstream) }
  const tracing = yield* FiberRef.get(FiberRef.currentTracerEnabled)
  // The level is fixed at start-up; below INFO the completion line is not even built.
  const logCompleted = LogLevel.lessThanEqual(yield* FiberRef.get(FiberRef.currentMinimumLogLevel), LogLevel.Info)
  const now = () => clock.unsafeCurrentTimeMillis()
  const bodyLimits = { maxBytes: config.maxBodyBytes, idleMs: Duration.toMillis(config.bodyTimeout) }

  const handle = async (req: IncomingMessage, res: ServerResponse, pathAndQuery: string, signal: AbortSignal, requestId: string) => {
    const started = now()
    const priority = fromHeader(req.headers["x-priority"])
    const path = pathAndQuery.split("?", 1)[0] ?? pathAndQuery
    const route = routeOf(path)
    const trail = newTrail(requestId, priority, route, tracing
      ? startSpan(`${req.method ?? "GET"} ${route}`, {
        kind: "server",
        parent: incomingParent(req),
        attributes: { ...serverAttributes(req, path, route), "sidecar.priority": priority, "sidecar.request_id": requestId }
      })
      : undefined)
    // A thrown bug still answers 500, frees the permit and is counted.
    let status = 500
    try {
      status = answer(res, await forward(req, res, pathAndQuery, trail, signal), signal)
    } finally {
      // Without tracing there is no span, and its attributes are not even built.
      if (trail.span !== undefined) endRequestSpan(trail.span, trail, status)
      void bridge.run(completed(trail, req, pathAndQuery, status, started))
    }
  }

  const endRequestSpan = (span: Tracer.Span, trail: Trail, status: number) => {
    const usage = trail.piped?.observed.usage
    endSpan(span, endExit("server", status), {
      "http.response.status_code": status,
      ...(status >= 500 || status === 429 ? { "error.type": String(status) } : {}),
      ...(trail.model === undefined ? {} : { "gen_ai.request.model": trail.model }),
      ...(trail.piped?.observed.model === undefined ? {} : { "gen_ai.response.model": trail.piped.observed.model }),
      ...(usage === undefined ? {} : { "gen_ai.usage.input_tokens": usage.promptTokens, "gen_ai.usage.output_tokens": usage.completionTokens }),
      "sidecar.queue_wait_ms": trail.queueMs,
      "sidecar.upstream_retries": trail.retries,
      "sidecar.retreat_state": trail.limits?.mode ?? "normal"
    })
  }

  const forward = async (req: IncomingMessage, res: ServerResponse, pathAndQuery: string, trail: Trail, signal: AbortSignal): Promise<Outcome> => {
    const method = req.method ?? "GET"
    if (method === "GET" && trail.route === "/v1/models") {
      const auth = req.headers.authorization
      const listed = await bridge.run(catalog.list(typeof auth === "string" ? auth : undefined), signal)
      if (Either.isLeft(listed)) return Either.left(listed.left)
      writeJson(res, 200, listed.right)
      return Either.right(200)
    }
    let body: Buffer | null = null
    if (method !== "GET" && method !== "HEAD") {
      const read = await readBody(req, bodyLimits)
      if (Either.isLeft(read)) return Either.left(read.left)
      body = read.right
    }
    // Model endpoints must be JSON; other `/v1/...` bodies only when they say so.
    const mustBeJson = jsonEndpoints.has(trail.route) || String(req.headers["content-type"] ?? "").includes("json")
    const parsed = body !== null && mustBeJson ? parseJsonBody(body) : Either.right({ json: undefined, model: undefined })
    if (Either.isLeft(parsed)) return Either.left(parsed.left)
    // `GET /v1/models/{id}` names its model in the path: same routing and prefix stripping as a body's.
    const pathModel = trail.route === modelRoute ? pathAndQuery.slice(modelsPrefix.length).split("?", 1)[0] : undefined
    trail.model = parsed.right.model ?? pathModel
    const routed = classify(trail.model, routing)
    const rewritten = Option.getOrUndefined(routed.rewrittenModel)
    const sentBody = rewritten === undefined || pathModel !== undefined || body === null ? body : replaceModel(body, rewritten)
    if (sentBody === undefined) return Either.left(new InvalidJson({ reason: "the model member could not be rewritten in place" }))
    const request: UpstreamRequest = {
      upstream: routed.upstream,
      model: rewritten ?? trail.model,
      method,
      pathAndQuery: rewritten !== undefined && pathModel !== undefined ? modelsPrefix + rewritten + pathAndQuery.slice(modelsPrefix.length + pathModel.length) : pathAndQuery,
      headers: requestHeaders(req.headers, trail.requestId),
      body: sentBody
    }
    if (routed.limited) return limited(res, request, trail, signal, clientIdOf(req.headers, req.socket.remoteAddress))
    const sent = await send(request, signal, trail)
    if (Either.isLeft(sent)) return Either.left(sent.left)
    trail.piped = await pipeUpstream(res, sent.right, {}, now, secretFor(request))
    return Either.right(sent.right.status)
  }

  // Admission's verdicts, followed: call when admitted, retry or deliver a consulted answer.
  const limited = async (res: ServerResponse, request: UpstreamRequest, trail: Trail, signal: AbortSignal, clientId: string): Promise<Outcome> => {
    let next: AdmissionRequest = { priority: trail.priority, model: trail.model, clientId }
    for (;;) {
      const queueSpan = tracing ? startSpan("sidecar.queue_wait", { parent: trail.span, attributes: { "sidecar.priority": trail.priority } }) : undefined
      const acquired = await acquire(queueSpan === undefined ? next : withSpan(next, queueSpan), signal)
      endSpan(queueSpan)
      if (Either.isLeft(acquired)) return Either.left(acquired.left)
      const permit = acquired.right
      trail.permit = permit
      trail.limits = permit.limits
      trail.queueMs += permit.waitedMs
      trail.retries = permit.attempt
      if (signal.aborted) return Either.left(clientGone)
      const sent = await send(request, signal, trail)
      if (Either.isLeft(sent)) {
        trail.outcome = failed
        return Either.left(sent.left)
      }
      const up = sent.right
      if (!permit.mustConsult(up.status)) {
        trail.outcome = { _tag: "Answered", status: up.status, retryAfter: undefined, body: undefined }
        trail.piped = await pipeUpstream(res, up, limitHeaders(permit, trail), now, secretFor(request))
        return Either.right(up.status)
      }
      const body = await readSmall(up.body)
      const verdict = await bridge.run(Effect.zipRight(recordUpstream(trail), permit.finish(consulted(up, body))))
      trail.permit = undefined
      if (Either.isLeft(verdict)) return Either.left(verdict.left)
      if (verdict.right._tag === "Retry") {
        trail.upstreamMs += now() - (trail.callStartedAt ?? now())
        trail.callStartedAt = undefined
        next = verdict.right.next
        continue
      }
      replyBuffered(res, up, body, { ...limitHeaders(permit, trail), ...verdict.right.headers }, now(), secretFor(request))
      return Either.right(up.status)
    }
  }

  // Admitted at once, or queued with no fiber: whoever settles the ticket completes the wait.
  const acquire = async (request: AdmissionRequest, signal: AbortSignal): Promise<Bridge.Bridged<Permit, AdmissionError>> => {
    const begun = await bridge.run(admission.begin(request), signal)
    if (Either.isLeft(begun)) return Either.left(begun.left)
    return isWaiting(begun.right) ? bridge.wait(begun.right, signal) : Either.right(begun.right)
  }

  // The upstream call; with tracing on it carries our traceparent, with tracing off the
  // client's own traceparent passes through untouched.
  const send = async (request: UpstreamRequest, signal: AbortSignal, trail: Trail) => {
    const span = trail.span === undefined ? undefined : startSpan(`${request.method} ${trail.route}`, {
      parent: trail.span,
      kind: "client",
      attributes: {
        ...clientAttributes(request.method, upstream.target(request)),
        ...(request.model === undefined ? {} : { "gen_ai.request.model": request.model }),
        "sidecar.provider": request.upstream
      }
    })
    const traced = span === undefined
      ? request
      : { ...request, headers: { ...request.headers, traceparent: HttpTraceContext.toHeaders(span).traceparent ?? "" } }
    const started = now()
    trail.callStartedAt = started
    const result = await upstream.send(traced, signal)
    trail.upstream = {
      provider: request.upstream,
      status: Either.getOrUndefined(result)?.status ?? 0,
      seconds: (now() - started) / 1000,
      failure: Either.isLeft(result) ? (result.left._tag === "UpstreamTimeout" ? `timeout (${result.left.phase})` : result.left.reason) : undefined
    }
    const status = trail.upstream.status
    if (span !== undefined) {
      endSpan(span, endExit("client", status), {
        ...(status === 0 ? {} : { "http.response.status_code": status }),
        ...(errorType(status) === undefined ? {} : { "error.type": errorType(status) })
      })
    }
    return result
  }

  // Only the primary upstream gets the sidecar's key; a passthrough one gets the client's own.
  const secretFor = (request: UpstreamRequest) => (request.upstream === "primary" ? upstream.keyBytes : undefined)

  const recordUpstream = (trail: Trail) =>
    Effect.suspend(() => {
      const answered = trail.upstream
      trail.upstream = undefined
      if (answered === undefined) return Effect.void
      const recorded = metrics.upstreamAnswered(answered.provider, answered.status, answered.seconds)
      // Throttling, server errors and no answer at all are worth a line each (never the body).
      return answered.status !== 0 && answered.status < 500 && answered.status !== 429 ? recorded : Effect.zipRight(recorded, Effect.logWarning({
        msg: "upstream_error",
        request_id: trail.requestId,
        provider: answered.provider,
        status: answered.status,
        ...(answered.failure === undefined ? {} : { error: answered.failure }),
        duration_ms: Math.round(answered.seconds * 1000)
      }))
    })

  /**
   * The end of a request in one runtime call: the permit's finish, metrics, the log line.
   * Chained without a generator (it runs once per request); recordUpstream reads the trail when run.
   */
  const completed = (trail: Trail, req: IncomingMessage, pathAndQuery: string, status: number, started: number): Effect.Effect<void> => {
    const totalMs = now() - started
    let steps = recordUpstream(trail)
    if (trail.permit !== undefined) steps = Effect.zipRight(steps, trail.permit.finish(trail.outcome ?? notSent))
    steps = Effect.zipRight(steps, metrics.requestCompleted(trail.priority, status))
    steps = Effect.zipRight(steps, metrics.requestDuration(trail.priority, totalMs / 1000))
    const piped = trail.piped
    if (piped?.streamFirstByteAt !== undefined) steps = Effect.zipRight(steps, metrics.streamFirstByte(trail.priority, (piped.streamFirstByteAt - started) / 1000))
    if (piped?.observed.usage !== undefined) steps = Effect.zipRight(steps, metrics.tokensUsed(piped.observed.usage.promptTokens, piped.observed.usage.completionTokens))
    if (!logCompleted) return steps
    return Effect.zipRight(steps, Effect.suspend(() => Effect.logInfo({
      msg: "request_completed",
      request_id: trail.requestId,
      ...(trail.span === undefined ? {} : { trace_id: trail.span.traceId, span_id: trail.span.spanId }),
      method: req.method,
      path: pathAndQuery,
      model: trail.model ?? null,
      priority: trail.priority,
      status,
      queue_ms: trail.queueMs,
      upstream_ms: Math.round(trail.upstreamMs + (trail.callStartedAt === undefined ? 0 : now() - trail.callStartedAt)),
      total_ms: totalMs,
      retries: trail.retries,
      retreat_state: trail.limits?.mode ?? null,
      effective_rpm: trail.limits?.effectiveRpm ?? null
    })))
  }

  // Spans only exist when tracing is on; made by the tracer directly, not through the runtime.
  const startSpan = (name: string, options: SpanStart): Tracer.Span | undefined => {
    if (!tracing) return undefined
    const span = tracer.span(name, Option.fromNullable(options.parent), Context.empty(), [], clock.unsafeCurrentTimeNanos(), options.kind ?? "internal")
    for (const [key, value] of Object.entries(options.attributes)) span.attribute(key, value)
    return span
  }
  const endSpan = (span: Tracer.Span | undefined, exit: Exit.Exit<void, unknown> = Exit.void, attributes: Record<string, unknown> = {}) => {
    if (span === undefined) return
    for (const [key, value] of Object.entries(attributes)) span.attribute(key, value)
    span.end(clock.unsafeCurrentTimeNanos(), exit)
  }

  return handle
})

/** Writes the error answer, if there is still someone to write it to; returns the status to record. */
const answer = (res: ServerResponse, outcome: Outcome, signal: AbortSignal): number =>
  Either.match(outcome, {
    onRight: (status) => status,
    onLeft: (error) => {
      if (error._tag === "ClientGone" || signal.aborted) return CLIENT_CLOSED
      const response = toErrorResponse(error)
      writeError(res, response)
      return response.status
    }
  })

const modelRoute = "/v1/models/{model}"
const modelsPrefix = "/v1/models/"
const clientGone = new ClientGone()
const failed: UpstreamOutcome = { _tag: "Failed" }
const notSent: UpstreamOutcome = { _tag: "NotSent" }

const consulted = (up: UpstreamResponse, body: Buffer): UpstreamOutcome => ({
  _tag: "Answered",
  status: up.status,
  retryAfter: headerValue(up.headers["retry-after"]),
  body: body.toString("utf8")
})

type Outcome = Either.Either<number, SidecarError | ClientGone>

interface SpanStart {
  readonly parent: Tracer.AnySpan | undefined
  readonly kind?: Tracer.SpanKind
  readonly attributes: Record<string, unknown>
}

/** What one request leaves behind for its metrics, log line and span. */
interface Trail {
  readonly requestId: string
  readonly priority: Priority
  /** `http.route`; also decides which bodies must be JSON. */
  readonly route: string
  readonly span: Tracer.Span | undefined
  model: string | undefined
  queueMs: number
  /** Time spent in finished upstream calls (retried attempts), and when the current one began. */
  upstreamMs: number
  callStartedAt: number | undefined
  retries: number
  /** Limiter state at the last admission: response headers, log line. */
  limits: LimiterSnapshot | undefined
  /** What the relayed answer showed: stream timing and reported usage. */
  piped: Piped | undefined
  /** The permit not yet finished, and what to tell it. */
  permit: Permit | undefined
  outcome: UpstreamOutcome | undefined
  /** The last upstream answer (status 0: none) not yet recorded. */
  upstream: { readonly provider: string; readonly status: number; readonly seconds: number; readonly failure: string | undefined } | undefined
}

const newTrail = (requestId: string, priority: Priority, route: string, span: Tracer.Span | undefined): Trail => ({
  requestId,
  priority,
  route,
  span,
  model: undefined,
  queueMs: 0,
  upstreamMs: 0,
  callStartedAt: undefined,
  retries: 0,
  limits: undefined,
  piped: undefined,
  permit: undefined,
  outcome: undefined,
  upstream: undefined
})

const limitHeaders = (permit: Permit, trail: Trail): Record<string, string> => {
  const b = permit.limits
  return {
    "x-ratelimit-limit-requests": String(Math.round(b.effectiveRpm)),
    "x-ratelimit-remaining-requests": String(Math.floor(b.tokens)),
    "x-ratelimit-reset-requests": `${((b.nextTokenInMs + b.pausedForMs) / 1000).toFixed(3)}s`,
    "x-sidecar-queue-wait-ms": String(Math.round(trail.queueMs)),
    "x-sidecar-priority": permit.priority,
    "x-sidecar-upstream-retries": String(trail.retries)
  }
}

// Written out: a spread plus a key takes V8's slow path on a fresh object (~0.5 µs per key).
const withSpan = (request: AdmissionRequest, span: Tracer.AnySpan | undefined): AdmissionRequest => ({
  priority: request.priority,
  model: request.model,
  clientId: request.clientId,
  span,
  arrivedAt: request.arrivedAt,
  retry: request.retry
})

/** Continues the client's W3C trace when it sent one. */
const incomingParent = (req: IncomingMessage): Tracer.ExternalSpan | undefined =>
  req.headers.traceparent === undefined
    ? undefined
    : Option.getOrUndefined(HttpTraceContext.fromHeaders(Headers.fromInput({ traceparent: req.headers.traceparent })))

const headerValue = (value: string | ReadonlyArray<string> | undefined): string | undefined =>
  typeof value === "string" && value.length > 0 && value.length <= 200 ? value : undefined
