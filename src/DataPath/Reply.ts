import { Option } from "effect"
import type { ServerResponse } from "node:http"
import type { UpstreamResponse } from "./Upstream.js"
import { type ErrorResponse, retryAfterHeaders, retryAfterMillis } from "../Common/ErrorResponse.js"
import { makeUsageTap, type Observed } from "../Observability/Usage.js"
import { type HeaderRecord, responseHeaders } from "./Headers.js"
import { scrub, scrubStream } from "./Scrub.js"

export const writeJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
  if (res.headersSent || res.destroyed) return
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers })
  res.end(JSON.stringify(body))
}

export const writeError = (res: ServerResponse, error: ErrorResponse): void => {
  if (res.headersSent) {
    res.destroy()
    return
  }
  if (res.destroyed) return
  res.writeHead(error.status, error.headers)
  res.end(error.body)
}

/** What passed through: when the first body byte of a stream went out, and the usage it reported. */
export interface Piped {
  readonly streamFirstByteAt: number | undefined
  readonly observed: Observed
}

/**
 * Pipes an upstream answer to the client untouched, chunk by chunk; resolves when the response
 * is closed (finished or client gone), having destroyed the upstream body either way.
 * An upstream failure mid-SSE ends the stream with an `error` event and no `[DONE]`.
 * A successful answer's bytes are read (never changed) for the usage they report.
 */
export const pipeUpstream = (
  res: ServerResponse,
  up: UpstreamResponse,
  extraHeaders: Record<string, string>,
  now: () => number,
  secret: Buffer | undefined
): Promise<Piped> =>
  new Promise((resolve) => {
    const headers = withRetryAfter(up.status, responseHeaders(up.headers), now())
    for (const name in extraHeaders) headers[name] = extraHeaders[name]!
    const sse = String(headers["content-type"] ?? "").startsWith("text/event-stream")
    if (sse) headers["x-accel-buffering"] = "no"
    res.writeHead(up.status, headers)
    if (sse) res.flushHeaders()
    const body = up.body
    const tap = up.status < 300 ? makeUsageTap(up.headers["content-type"], up.headers["content-encoding"]) : undefined
    let streamFirstByteAt: number | undefined
    if (tap !== undefined || sse) {
      body.on("data", (chunk: Buffer) => {
        if (sse && streamFirstByteAt === undefined) streamFirstByteAt = now()
        tap?.push(chunk)
      })
    }
    body.on("error", () => {
      if (sse && !res.destroyed) {
        res.end(`event: error\ndata: ${JSON.stringify(streamError)}\n\n`)
      } else {
        res.destroy()
      }
    })
    res.on("close", () => {
      if (!body.destroyed) body.destroy()
      resolve({ streamFirstByteAt, observed: tap?.result() ?? nothingObserved })
    })
    // An error body may echo the key the upstream received: it never reaches the client.
    if (up.status >= 300 && secret !== undefined) body.pipe(scrubStream(secret)).pipe(res)
    else body.pipe(res)
  })

/** Relays an upstream answer that was read whole (consulted by admission), with extra headers. */
export const replyBuffered = (
  res: ServerResponse,
  up: UpstreamResponse,
  body: Buffer,
  extraHeaders: Record<string, string>,
  now: number,
  secret: Buffer | undefined
): void => {
  if (res.headersSent || res.destroyed) return
  const headers = withRetryAfter(up.status, responseHeaders(up.headers), now)
  delete headers["content-length"]
  for (const name in extraHeaders) headers[name] = extraHeaders[name]!
  headers["content-length"] = String(body.length)
  res.writeHead(up.status, headers)
  res.end(secret === undefined ? body : scrub(body, secret))
}

/** A relayed 429/503 tells the client when to come back in both spellings, from the upstream's own hint (or 1 s). */
const withRetryAfter = (status: number, headers: HeaderRecord, now: number): HeaderRecord => {
  if ((status !== 429 && status !== 503) || headers["retry-after-ms"] !== undefined) return headers
  const hint = headers["retry-after"]
  const ms = Option.getOrElse(retryAfterMillis(hint, now), () => 1000)
  return { ...headers, ...retryAfterHeaders(ms) }
}

const nothingObserved: Observed = { usage: undefined, model: undefined }

const streamError = { error: { message: "Upstream stream failed", type: "upstream_error", code: "upstream_stream_error" } }
