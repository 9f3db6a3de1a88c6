import { Duration, Effect, Fiber, FiberId, Runtime, Schema, type Scope } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"

export class ListenFailed extends Schema.TaggedError<ListenFailed>()("ListenFailed", {
  name: Schema.String,
  address: Schema.String,
  reason: Schema.String
}) {}

export interface ServeOptions {
  readonly name: string
  readonly host: string
  readonly port: number
  /** How long in-flight requests may run on after shutdown begins. */
  readonly drainTimeout: Duration.Duration
  /** Runs when shutdown begins, after the listener closed (e.g. answer queued requests 503). */
  readonly onDrain?: Effect.Effect<void>
}

export type Handler<R> = (req: IncomingMessage, res: ServerResponse) => Effect.Effect<void, never, R>

/**
 * A node:http server whose bytes never pass through Effect streams; each request runs as its
 * own fiber, interrupted when the client goes away. Closing the scope drains: no new
 * requests (late keep-alive ones get 503), in-flight ones get `drainTimeout`, then sockets close.
 */
export const serve = <R>(options: ServeOptions, handler: Handler<R>): Effect.Effect<{ readonly port: number }, ListenFailed, Scope.Scope | R> =>
  Effect.gen(function*() {
    const runFork = Runtime.runFork(yield* Effect.runtime<R>())
    const inflight = new Set<Fiber.RuntimeFiber<void>>()
    let draining = false

    const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
      if (draining) {
        res.writeHead(503, { connection: "close", "retry-after": "1", "content-type": "application/json" })
        res.end(JSON.stringify({ error: { message: "Sidecar is shutting down", type: "server_error", code: "shutting_down" } }))
        return
      }
      const fiber = runFork(handler(req, res))
      inflight.add(fiber)
      fiber.addObserver(() => inflight.delete(fiber))
      res.on("close", () => {
        if (!res.writableFinished) fiber.unsafeInterruptAsFork(FiberId.none)
      })
    })

    const port = yield* Effect.acquireRelease(listen(server, options), () =>
      Effect.gen(function*() {
        draining = true
        server.close()
        server.closeIdleConnections()
        if (options.onDrain !== undefined) yield* options.onDrain
        // Finalizers run uninterruptibly: the wait must opt back in so the timeout can cut it.
        yield* Effect.interruptible(Fiber.awaitAll([...inflight])).pipe(Effect.timeoutOption(options.drainTimeout))
        server.closeAllConnections()
        yield* Fiber.interruptAll([...inflight])
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
