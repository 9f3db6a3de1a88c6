import { Deferred, Effect, Stream } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { PriorityQueue } from "../Admission/PriorityQueue.js"
import { RateLimiter } from "../Admission/RateLimiter.js"
import { RouteNotFound } from "../Common/Errors.js"
import { toErrorResponse } from "../Common/ErrorResponse.js"
import { writeError, writeJson } from "../DataPath/Reply.js"
import { version } from "../Version.js"
import { makeAdmin } from "./Admin.js"
import { loadDashboardPage } from "./DashboardPage.js"
import { Readiness } from "./Readiness.js"
import { Snapshot } from "./Snapshot.js"

/** Health, readiness, status, dashboard and admin on the proxy port; `draining` completes when shutdown begins. */
export const makeControlRoutes = (draining: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    const admin = yield* makeAdmin
    const snapshot = yield* Snapshot
    const readinessProbe = yield* Readiness
    const queue = yield* PriorityQueue
    const bucket = yield* RateLimiter
    const page = loadDashboardPage()

    const health = Effect.map(snapshot.current, (s) => ({ status: "ok", uptime: s.uptime_seconds, version }))

    // Readiness never looks at the token count: an empty bucket means busy, not broken.
    const readiness = Effect.gen(function*() {
      const [reachable, q, b, stopping] = yield* Effect.all(
        [readinessProbe.upstreamReachable, queue.snapshot, bucket.snapshot, Deferred.isDone(draining)],
        { concurrency: "unbounded" }
      )
      const body = {
        ready: false,
        upstream_reachable: reachable,
        queue_healthy: q.max === 0 || q.size < q.max,
        token_bucket_healthy: b.effectiveRpm > 0,
        draining: stopping
      }
      return { ...body, ready: body.upstream_reachable && body.queue_healthy && body.token_bucket_healthy && !stopping }
    })

    const sse = (res: ServerResponse) =>
      Effect.gen(function*() {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" })
        // Dashboards must not hold up shutdown: their streams end when draining starts.
        yield* Stream.runForEach(Stream.interruptWhenDeferred(snapshot.events, draining), (frame) => Effect.sync(() => res.write(frame)))
        res.end()
      })

    return (req: IncomingMessage, res: ServerResponse): Effect.Effect<void> => {
      const path = (req.url ?? "/").split("?", 1)[0] ?? "/"
      const get = req.method === "GET" || req.method === "HEAD"
      if (get && path === "/health") return Effect.map(health, (h) => writeJson(res, 200, h))
      if (get && path === "/health/ready") return Effect.map(readiness, (r) => writeJson(res, r.ready ? 200 : 503, r))
      if (get && path === "/status") return Effect.map(snapshot.current, (s) => writeJson(res, 200, s))
      if (get && (path === "/" || path === "/dashboard")) {
        return Effect.sync(() => {
          res.writeHead(302, { location: "/api/dashboard" })
          res.end()
        })
      }
      if (get && path === "/api/dashboard") {
        return Effect.sync(() => {
          res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" })
          res.end(page)
        })
      }
      if (get && path === "/api/dashboard/stream") return sse(res)
      if (path === "/api/admin/config") return admin(req, res)
      return Effect.sync(() => writeError(res, toErrorResponse(new RouteNotFound({ method: req.method ?? "GET", path }))))
    }
  })
