import { Effect, Layer, Option } from "effect"
import { Admission } from "./Admission/Admission.js"
import * as Dispatcher from "./Admission/Dispatcher.js"
import { Inflight, ModelSlots } from "./Admission/Inflight.js"
import { PriorityQueue } from "./Admission/PriorityQueue.js"
import { RateLimiter } from "./Admission/RateLimiter.js"
import * as SharedRateLimiter from "./Admission/Shared/SharedRateLimiter.js"
import { SidecarConfig } from "./Config/SidecarConfig.js"
import * as Lifecycle from "./Control/Lifecycle.js"
import { Readiness } from "./Control/Readiness.js"
import { Reconfigure } from "./Control/Reconfigure.js"
import { Snapshot } from "./Control/Snapshot.js"
import { ModelCatalog } from "./DataPath/ModelCatalog.js"
import { Upstream } from "./DataPath/Upstream.js"
import { Metrics } from "./Observability/Metrics.js"
import { MetricsServer, ProxyServer } from "./Server/Servers.js"

/** The rate limit: this process's own, or one shared through Redis (SIDECAR_REDIS_URL). Needs `SidecarConfig`, `Metrics`. */
export const limiter = Layer.unwrapEffect(
  Effect.map(SidecarConfig, (config) => Option.match(config.redisUrl, { onNone: () => RateLimiter.layer, onSome: SharedRateLimiter.layer }))
)

/** Admission: the queue, the limiter, the in-flight bound, the dispatcher fiber and the service in front. Needs `SidecarConfig`, `Metrics`. */
export const admission = Layer.merge(Admission.layer, Dispatcher.layer).pipe(
  Layer.provideMerge(Layer.mergeAll(PriorityQueue.layer, limiter, Inflight.layer, ModelSlots.layer))
)

/** The upstream pool, shared by the data path and the side calls' HttpClient. Needs `SidecarConfig`. */
export const upstream = ModelCatalog.layer.pipe(
  Layer.provideMerge(Layer.merge(Upstream.layer, Upstream.httpClientLayer)),
  Layer.provideMerge(Upstream.poolLayer)
)

/** Every service, from the leaves up; each is built once and shared. Needs `SidecarConfig`. */
export const services = Layer.mergeAll(Snapshot.layer, Readiness.layer, Reconfigure.layer).pipe(
  Layer.provideMerge(admission),
  Layer.provideMerge(Layer.merge(upstream, Metrics.layer))
)

/** The two listeners on top of the services. Closing it drains the proxy first. */
export const layer = Layer.mergeAll(ProxyServer.layer, MetricsServer.layer, Lifecycle.reloadOnHangup).pipe(
  Layer.provideMerge(services),
  Layer.provideMerge(Lifecycle.startupLog)
)
