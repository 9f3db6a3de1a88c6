import { Clock, Duration, Effect, Schema, type Scope } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { ShuttingDown } from "../Common/Errors.js"
import { toErrorResponse } from "../Common/ErrorResponse.js"
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

    const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
      if (draining) return writeError(res, toErrorResponse(new ShuttingDown()))
      const controller = new AbortController()
      res.on("close", () => {
        if (!res.writableFinished) controller.abort()
      })
      // Handlers answer their own failures; anything escaping is a bug: drop the connection.
      const done: Promise<void> = handler(req, res, controller.signal).catch(() => void res.destroy()).finally(() => inflight.delete(done))
      inflight.set(done, controller)
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
        for (const controller of inflight.values()) controller.abort()
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
