import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Context, Duration, Effect, Either, Layer, Option, Redacted } from "effect"
import type { Readable } from "node:stream"
import { Agent, type Dispatcher } from "undici"
import { UpstreamFailed, UpstreamTimeout } from "./Errors.js"
import type { HeaderRecord } from "./Http/Headers.js"
import { joinTo, upstreamBase } from "./Routing.js"
import { SidecarConfig } from "./SidecarConfig.js"

export interface UpstreamRequest {
  readonly upstream: "primary" | "passthrough"
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

/** The upstream APIs behind one keep-alive undici pool: proxying and side calls share it. */
export class Upstream extends Context.Tag("sidecar/Upstream")<Upstream, {
  /**
   * Sends one request on the data path (a Promise: the bytes stay in Node); `signal` aborts
   * it at any stage, including while its body streams.
   */
  readonly send: (request: UpstreamRequest, signal: AbortSignal) => Promise<Either.Either<UpstreamResponse, UpstreamFailed | UpstreamTimeout>>
  /** Whether the primary upstream answers HTTP at all (cached a few seconds). */
  readonly reachable: Effect.Effect<boolean>
}>() {
  static readonly layer = Layer.scoped(
    Upstream,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const timeoutMs = Duration.toMillis(config.timeout)
      const agent = yield* Effect.acquireRelease(
        Effect.sync(() =>
          new Agent({
            keepAliveTimeout: 30_000,
            headersTimeout: timeoutMs,
            bodyTimeout: timeoutMs,
            connect: { timeout: Math.min(timeoutMs, 30_000) }
          })
        ),
        (agent) => Effect.promise(() => agent.destroy())
      )
      const bases = {
        primary: upstreamBase(config.upstream),
        passthrough: upstreamBase(Option.getOrElse(config.passthroughUpstream, () => config.upstream))
      }
      const auth = Option.map(config.apiKey, (key) => `Bearer ${Redacted.value(key)}`)
      if (Option.isNone(auth)) {
        yield* Effect.logWarning({ msg: "SIDECAR_API_KEY is not set: requests reach the upstream with the client's own Authorization" })
      }

      const send = (request: UpstreamRequest, signal: AbortSignal) => {
        const target = joinTo(bases[request.upstream], request.pathAndQuery)
        const headers = request.upstream === "primary" && Option.isSome(auth)
          ? { ...request.headers, authorization: auth.value }
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
          (cause: unknown) => Either.left(toUpstreamError(cause))
        )
      }

      const client = NodeHttpClient.makeUndici(agent).pipe(HttpClient.withTracerPropagation(false))
      const models = joinTo(bases.primary, "/v1/models")
      const probe = client.execute(
        HttpClientRequest.get(models.origin + models.path).pipe(
          Option.isSome(auth) ? HttpClientRequest.setHeader("authorization", auth.value) : (r) => r
        )
      ).pipe(
        Effect.map((response) => response.status < 500),
        Effect.timeoutTo({ duration: "3 seconds", onTimeout: () => false, onSuccess: (ok) => ok }),
        Effect.scoped,
        Effect.orElseSucceed(() => false)
      )
      const reachable = yield* Effect.cachedWithTTL(probe, "5 seconds")

      return Upstream.of({ send, reachable })
    })
  )
}

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
