import { Context, Deferred, Effect, Either, Layer } from "effect"
import type { ServerResponse } from "node:http"
import { PriorityQueue } from "../Admission/PriorityQueue.js"
import { RouteNotFound } from "../Common/Errors.js"
import { toErrorResponse } from "../Common/ErrorResponse.js"
import { Readiness } from "../Control/Readiness.js"
import { Snapshot } from "../Control/Snapshot.js"
import * as Bridge from "../DataPath/Bridge.js"
import { writeError } from "../DataPath/Reply.js"
import { Metrics } from "../Observability/Metrics.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import { serve } from "./NodeServer.js"
import { makeRoutes } from "./Routes.js"

/** The proxy listener (API, health, dashboard, admin); its port is the bound one. */
export class ProxyServer extends Context.Tag("sidecar/ProxyServer")<ProxyServer, { readonly port: number }>() {
  static readonly layer = Layer.scoped(
    ProxyServer,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const queue = yield* PriorityQueue
      const draining = yield* Deferred.make<void>()
      const routes = yield* makeRoutes(draining)
      const bound = yield* serve({
        name: "proxy",
        host: config.host,
        port: config.port,
        drainTimeout: config.drainTimeout,
        headersTimeout: config.headersTimeout,
        maxHeaders: config.maxHeaders,
        // Shutdown: readiness goes red, queued requests are answered 503, in-flight calls finish.
        onDrain: Effect.zipRight(Deferred.succeed(draining, undefined), queue.close).pipe(
          Effect.flatMap((queued) => Effect.logInfo({ msg: "queue_closed", answered_503: queued }))
        )
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
      const readiness = yield* Readiness
      const bridge = yield* Bridge.make
      const scrape = (res: ServerResponse) =>
        Effect.gen(function*() {
          const s = yield* snapshot.compute
          const ready = yield* readiness.upstreamReachable
          const { body, contentType } = yield* metrics.render({
            ready,
            uptimeSeconds: s.uptime_seconds,
            tokens: s.token_bucket.tokens,
            effectiveRpm: s.retreat.effective_rpm,
            mode: s.retreat.state,
            rate429: s.retreat.rate_429,
            queueDepth: s.queue.by_priority,
            configuredRpm: s.retreat.base_rpm,
            quotaEstimateRpm: s.control.quota_estimate_rpm ?? 0,
            queueMax: s.queue.max,
            backend: { state: s.limiter.backend.state, replicas: s.limiter.backend.replicas }
          })
          res.writeHead(200, { "content-type": contentType })
          res.end(body)
        })
      const bound = yield* serve({ name: "metrics", host: config.host, port: config.metricsPort, drainTimeout: config.drainTimeout, headersTimeout: config.headersTimeout, maxHeaders: config.maxHeaders }, async (req, res, signal) => {
        const path = (req.url ?? "").split("?", 1)[0] ?? ""
        if (path !== "/metrics") return writeError(res, toErrorResponse(new RouteNotFound({ method: req.method ?? "GET", path })))
        const done = await bridge.run(scrape(res), signal)
        if (Either.isLeft(done) && done.left._tag === "Defect") writeError(res, toErrorResponse(done.left))
      })
      yield* Effect.logInfo({ msg: "listening", server: "metrics", address: `http://${config.host}:${bound.port}/metrics` })
      return bound
    })
  )
}
