import { Deferred, Effect, Either, Runtime, Stream } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { RouteNotFound } from "../Errors.js"
import { loadDashboardPage } from "../DashboardPage.js"
import { RequestQueue } from "../RequestQueue.js"
import { Snapshot } from "../Snapshot.js"
import { TokenBucket } from "../TokenBucket.js"
import { Upstream } from "../Upstream.js"
import { version } from "../Version.js"
import { makeAdmin } from "./Admin.js"
import { toErrorResponse } from "./ErrorResponse.js"
import { makeProxy } from "./Proxy.js"
import { writeError, writeJson } from "./Reply.js"
import { normalizePath } from "./RequestPath.js"

/** The proxy port's routing table; `draining` completes when shutdown begins. */
export const makeRoutes = (draining: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    const proxy = yield* makeProxy
    const admin = yield* makeAdmin
    const snapshot = yield* Snapshot
    const upstream = yield* Upstream
    const queue = yield* RequestQueue
    const bucket = yield* TokenBucket
    const page = loadDashboardPage()
    const runPromise = Runtime.runPromise(yield* Effect.runtime<never>())

    const health = Effect.map(snapshot.current, (s) => ({ status: "ok", uptime: s.uptime_seconds, version }))

    // Readiness never looks at the token count: an empty bucket means busy, not broken.
    const readiness = Effect.gen(function*() {
      const [reachable, q, b, stopping] = yield* Effect.all([upstream.reachable, queue.snapshot, bucket.snapshot, Deferred.isDone(draining)], { concurrency: "unbounded" })
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

    const control = (req: IncomingMessage, res: ServerResponse): Effect.Effect<void> => {
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

    // `/v1/...` takes the proxy's Node data path; everything else is an Effect run to completion.
    return (req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> => {
      const url = req.url ?? "/"
      const path = url.split("?", 1)[0] ?? url
      if (path === "/v1" || path.startsWith("/v1/") || path.startsWith("/v1%") || !url.startsWith("/") || url.startsWith("//")) {
        return Either.match(normalizePath(url), {
          onLeft: (error) => Promise.resolve(writeError(res, toErrorResponse(error))),
          onRight: (clean) => proxy(req, res, clean, signal)
        })
      }
      return runPromise(control(req, res), { signal }).catch(() => undefined)
    }
  })
