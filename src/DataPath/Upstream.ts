import { NodeHttpClient } from "@effect/platform-node"
import { Context, Duration, Effect, Either, Layer, Option, Redacted } from "effect"
import type { Readable } from "node:stream"
import { Agent, type Dispatcher } from "undici"
import { UpstreamFailed, UpstreamTimeout } from "../Common/Errors.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import type { HeaderRecord } from "./Headers.js"
import { joinTo, upstreamBase } from "./UpstreamUrl.js"

export type UpstreamName = "primary" | "passthrough"

export interface UpstreamRequest {
  readonly upstream: UpstreamName
  /** The model id as sent (after prefix stripping), for traces and logs. */
  readonly model: string | undefined
  readonly method: string
  readonly pathAndQuery: string
  readonly headers: HeaderRecord
  readonly body: Buffer | null
}

export interface UpstreamResponse {
  readonly status: number
  readonly headers: Record<string, string | Array<string> | undefined>
  /** Raw bytes, never decoded: piped to the client as they arrive. */
  readonly body: Readable
}

/** The upstream APIs on the data path: one keep-alive undici pool, the key added here and only here. */
export class Upstream extends Context.Tag("sidecar/Upstream")<Upstream, {
  /**
   * Sends one request (a Promise: the bytes stay in Node); `signal` aborts it at any stage,
   * including while its body streams.
   */
  readonly send: (request: UpstreamRequest, signal: AbortSignal) => Promise<Either.Either<UpstreamResponse, UpstreamFailed | UpstreamTimeout>>
  /** Where `request` goes (no credentials): for span attributes. */
  readonly target: (request: UpstreamRequest) => URL
  /** The key's bytes, only to mask them in relayed error bodies; undefined without a key. */
  readonly keyBytes: Buffer | undefined
  /** `authorization` for side calls to the primary upstream, when a key is set. */
  readonly authorization: Option.Option<string>
}>() {
  static readonly layer = Layer.effect(
    Upstream,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const agent = yield* NodeHttpClient.Dispatcher
      const bases = {
        primary: upstreamBase(config.upstream),
        passthrough: upstreamBase(Option.getOrElse(config.passthroughUpstream, () => config.upstream))
      }
      const authorization = Option.map(config.apiKey, (key) => `Bearer ${Redacted.value(key)}`)
      if (Option.isNone(authorization)) {
        yield* Effect.logWarning({ msg: "SIDECAR_API_KEY is not set: requests reach the upstream with the client's own Authorization" })
      }

      const call = (request: UpstreamRequest, signal: AbortSignal) => {
        const target = joinTo(bases[request.upstream], request.pathAndQuery)
        // Not a spread plus a key: V8 takes a slow path for that on a dictionary-like header object.
        const headers = request.upstream === "primary" && Option.isSome(authorization)
          ? Object.assign({}, request.headers, { authorization: authorization.value })
          : request.headers
        return agent.request({
          origin: target.origin,
          path: target.path,
          method: request.method as Dispatcher.HttpMethod,
          headers,
          body: request.body,
          signal
        }).then(
          (r) => Either.right<UpstreamResponse>({ status: r.statusCode, headers: r.headers, body: r.body }),
          (cause: unknown) => Either.left<unknown>(cause)
        )
      }

      // A pooled connection the upstream closed as we reused it fails before any response byte:
      // the body is buffered, so the request goes once more, on another connection.
      const send = async (request: UpstreamRequest, signal: AbortSignal) => {
        let result = await call(request, signal)
        if (Either.isLeft(result) && !signal.aborted && staleConnection.has(errorCode(result.left) ?? "")) result = await call(request, signal)
        return Either.mapLeft(result, toUpstreamError)
      }
      const target = (request: UpstreamRequest) => {
        const t = joinTo(bases[request.upstream], request.pathAndQuery)
        return new URL(t.origin + t.path)
      }
      const keyBytes = Option.getOrUndefined(Option.map(config.apiKey, (key) => Buffer.from(Redacted.value(key))))
      return Upstream.of({ send, target, authorization, keyBytes })
    })
  )

  /** The undici pool that the data path and the side calls' `HttpClient` share. */
  static readonly poolLayer = Layer.scoped(
    NodeHttpClient.Dispatcher,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const timeoutMs = Duration.toMillis(config.timeout)
      return yield* Effect.acquireRelease(
        Effect.sync((): Dispatcher =>
          new Agent({
            keepAliveTimeout: 30_000,
            // An upstream's own Keep-Alive timeout hint wins, less a margin for the race at its edge.
            keepAliveTimeoutThreshold: 2_000,
            // A bounded pool per origin: 1,000 streams must not leave 1,000 idle sockets behind.
            connections: config.upstreamConnections,
            headersTimeout: timeoutMs,
            bodyTimeout: timeoutMs,
            connect: { timeout: Math.min(timeoutMs, 30_000) }
          })
        ),
        (agent) => Effect.promise(() => agent.destroy())
      )
    })
  )

  /** `HttpClient` for side calls (readiness, model listing) over the same pool. */
  static readonly httpClientLayer = NodeHttpClient.layerUndiciWithoutDispatcher
}

const staleConnection = new Set(["UND_ERR_SOCKET", "ECONNRESET", "EPIPE"])

/** Maps undici's failures onto our vocabulary; the cause text never holds request headers. */
const toUpstreamError = (cause: unknown): UpstreamFailed | UpstreamTimeout => {
  const code = errorCode(cause)
  switch (code) {
    case "UND_ERR_CONNECT_TIMEOUT": return new UpstreamTimeout({ phase: "connect" })
    case "UND_ERR_HEADERS_TIMEOUT": return new UpstreamTimeout({ phase: "headers" })
    case "UND_ERR_BODY_TIMEOUT": return new UpstreamTimeout({ phase: "body" })
    default: return new UpstreamFailed({ reason: code ?? "request failed" })
  }
}

function errorCode(cause: unknown): string | undefined {
  if (typeof cause !== "object" || cause === null) return undefined
  const own = (cause as { code?: unknown }).code
  if (typeof own === "string") return own
  return errorCode((cause as { cause?: unknown }).cause)
}
