import { Context, Deferred, Effect, Layer, Runtime } from "effect"
import type { ServerResponse } from "node:http"
import { Metrics } from "../Metrics.js"
import { RequestQueue } from "../RequestQueue.js"
import { SidecarConfig } from "../SidecarConfig.js"
import { Snapshot } from "../Snapshot.js"
import { Upstream } from "../Upstream.js"
import { serve } from "./NodeServer.js"
import { RouteNotFound } from "../Errors.js"
import { toErrorResponse } from "./ErrorResponse.js"
import { writeError } from "./Reply.js"
import { makeRoutes } from "./Routes.js"

/** The proxy listener (API, health, dashboard, admin); its port is the bound one. */
export class ProxyServer extends Context.Tag("sidecar/ProxyServer")<ProxyServer, { readonly port: number }>() {
  static readonly layer = Layer.scoped(
    ProxyServer,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const queue = yield* RequestQueue
      const draining = yield* Deferred.make<void>()
      const routes = yield* makeRoutes(draining)
      const bound = yield* serve({
        name: "proxy",
        host: config.host,
        port: config.port,
        drainTimeout: config.drainTimeout,
        // Shutdown: readiness goes red, queued requests are answered 503, in-flight calls finish.
        onDrain: Effect.zipRight(Deferred.succeed(draining, undefined), queue.close)
      }, routes)
      yield* Effect.logInfo({ msg: "listening", server: "proxy", address: `http://${config.host}:${bound.port}` })
      return bound
    })
  )
}

/** Prometheus `/metrics` on its own port, in the same process and Layer graph. */
export class MetricsServer extends Context.Tag("sidecar/MetricsServer")<MetricsServer, { readonly port: number }>() {
  static readonly layer = Layer.scoped(
    MetricsServer,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const metrics = yield* Metrics
      const snapshot = yield* Snapshot
      const upstream = yield* Upstream
      const runPromise = Runtime.runPromise(yield* Effect.runtime<never>())
      const scrape = (res: ServerResponse) =>
        Effect.gen(function*() {
          const s = yield* snapshot.compute
          const ready = yield* upstream.reachable
          const { body, contentType } = yield* metrics.render({
            ready,
            uptimeSeconds: s.uptime_seconds,
            tokens: s.token_bucket.tokens,
            effectiveRpm: s.retreat.effective_rpm,
            mode: s.retreat.state,
            rate429: s.retreat.rate_429,
            queueDepth: s.queue.by_priority
          })
          res.writeHead(200, { "content-type": contentType })
          res.end(body)
        })
      const bound = yield* serve({ name: "metrics", host: config.host, port: config.metricsPort, drainTimeout: config.drainTimeout }, (req, res, signal) => {
        const path = (req.url ?? "").split("?", 1)[0] ?? ""
        if (path !== "/metrics") return Promise.resolve(writeError(res, toErrorResponse(new RouteNotFound({ method: req.method ?? "GET", path }))))
        return runPromise(scrape(res), { signal })
      })
      yield* Effect.logInfo({ msg: "listening", server: "metrics", address: `http://${config.host}:${bound.port}/metrics` })
      return bound
    })
  )
}
