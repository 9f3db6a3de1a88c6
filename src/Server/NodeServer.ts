import { Clock, Duration, Effect, Schema, type Scope } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from "node:http"
import type { Duplex } from "node:stream"
import { InvalidPath, RequestTimeout, ShuttingDown, TooManyHeaders } from "../Common/Errors.js"
import { type ErrorResponse, toErrorResponse } from "../Common/ErrorResponse.js"
import { writeError } from "../DataPath/Reply.js"
import type { AddressInfo } from "node:net"

export class ListenFailed extends Schema.TaggedError<ListenFailed>()("ListenFailed", {
  name: Schema.String,
  address: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Cannot listen on ${this.address} (${this.name} server): ${this.reason}`
  }
}

export interface ServeOptions {
  readonly name: string
  readonly host: string
  readonly port: number
  /** How long in-flight requests may run on after shutdown begins. */
  readonly drainTimeout: Duration.Duration
  /** Runs when shutdown begins, after the listener closed (e.g. answer queued requests 503). */
  readonly onDrain?: Effect.Effect<void>
  /** Longest time to receive a request's head (408 after it). */
  readonly headersTimeout: Duration.Duration
  /** Most request headers accepted (431 above). */
  readonly maxHeaders: number
}

/** Resolves when the request is done; `signal` aborts when the client leaves or the drain runs out. */
export type Handler = (req: IncomingMessage, res: ServerResponse, signal: AbortSignal) => Promise<void>

/**
 * A node:http server whose bytes never pass through Effect streams. Closing the scope drains:
 * no new requests (late keep-alive ones get 503), in-flight ones get `drainTimeout`, then their
 * signals abort and the sockets close.
 */
export const serve = (options: ServeOptions, handler: Handler): Effect.Effect<{ readonly port: number }, ListenFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const inflight = new Map<Promise<void>, AbortController>()
    let draining = false

    // Sockets with a request being answered (and that request), and those to close once its answer is out.
    const busy = new Map<Duplex, IncomingMessage>()
    const closeAfter = new Set<Duplex>()
    const server = createServer({
      keepAliveTimeout: 65_000,
      headersTimeout: Duration.toMillis(options.headersTimeout),
      // Node checks the head timeout on this period: the default 30 s would make it 30 s late.
      connectionsCheckingInterval: 1000
    }, (req, res) => {
      if (draining) return writeError(res, toErrorResponse(new ShuttingDown()))
      if (req.rawHeaders.length / 2 > options.maxHeaders) return writeError(res, toErrorResponse(new TooManyHeaders({ limit: options.maxHeaders })))
      const socket = req.socket
      busy.set(socket, req)
      const controller = new AbortController()
      res.on("close", () => {
        busy.delete(socket)
        if (closeAfter.delete(socket)) socket.end()
        if (!res.writableFinished) controller.abort(clientClosed)
      })
      // Handlers answer their own failures; anything escaping is a bug: drop the connection.
      // One derived promise, not two (catch + finally): a queued request keeps it as long as it waits.
      const done: Promise<void> = handler(req, res, controller.signal).then(() => void inflight.delete(done), () => {
        res.destroy()
        inflight.delete(done)
      })
      inflight.set(done, controller)
    })

    // One more than we accept, so a request over the limit is seen instead of silently cut.
    server.maxHeadersCount = options.maxHeaders + 1

    // Bytes Node cannot parse. After a valid request on the same connection (pipelining) its
    // answer goes out first and the connection closes then; otherwise the error is answered here.
    server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
      const current = busy.get(socket)
      if (current !== undefined) {
        // Garbage after a whole request waits for that request's answer; a request cut short is gone.
        if (current.complete) closeAfter.add(socket)
        else socket.destroy()
        return
      }
      if (!socket.writable) return void socket.destroy()
      socket.end(rawError(toErrorResponse(clientErrorOf(error, options.maxHeaders))))
    })

    const port = yield* Effect.acquireRelease(listen(server, options), () =>
      Effect.gen(function*() {
        draining = true
        const startedAt = yield* Clock.currentTimeMillis
        const running = inflight.size
        yield* Effect.logInfo({ msg: "drain_started", server: options.name, inflight: running })
        server.close()
        server.closeIdleConnections()
        if (options.onDrain !== undefined) yield* options.onDrain
        // Finalizers run uninterruptibly: the wait must opt back in so the timeout can cut it.
        yield* Effect.interruptible(Effect.promise(() => Promise.all(inflight.keys()))).pipe(Effect.timeoutOption(options.drainTimeout))
        const cut = inflight.size
        for (const controller of inflight.values()) controller.abort(drainDeadline)
        // Aborted streams end with their SSE `event: error`: let those last bytes out before the sockets close.
        yield* Effect.interruptible(Effect.promise(() => Promise.all(inflight.keys()))).pipe(Effect.timeoutOption("1 second"))
        server.closeAllConnections()
        yield* (cut === 0 ? Effect.logInfo : Effect.logWarning)({
          msg: "drain_finished",
          server: options.name,
          completed: running - cut,
          cut_at_deadline: cut,
          duration_ms: (yield* Clock.currentTimeMillis) - startedAt
        })
      }))
    return { port }
  })

// Abort reasons made once: abort() without one builds a DOMException per leaving client.
const clientClosed = new Error("client closed the connection")
const drainDeadline = new Error("drain deadline")

const clientErrorOf = (error: NodeJS.ErrnoException, maxHeaders: number) => {
  switch (error.code) {
    case "ERR_HTTP_REQUEST_TIMEOUT": return new RequestTimeout({ phase: "headers" })
    case "HPE_HEADER_OVERFLOW": return new TooManyHeaders({ limit: maxHeaders })
    default: return new InvalidPath({ reason: "the request could not be parsed as HTTP/1.1" })
  }
}

/** An error answer written straight to a socket that has no response object. */
const rawError = (response: ErrorResponse): string => {
  const headers = { ...response.headers, "content-length": String(Buffer.byteLength(response.body)), connection: "close" }
  const status = `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? ""}`
  return `${status}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n${response.body}`
}

const listen = (server: Server, options: ServeOptions) =>
  Effect.async<number, ListenFailed>((resume) => {
    const onError = (error: Error) =>
      resume(Effect.fail(new ListenFailed({ name: options.name, address: `${options.host}:${options.port}`, reason: error.message })))
    server.once("error", onError)
    server.listen(options.port, options.host, () => {
      server.off("error", onError)
      resume(Effect.succeed((server.address() as AddressInfo).port))
    })
  })
