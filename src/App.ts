import { Layer } from "effect"
import * as Dispatcher from "./Dispatcher.js"
import { MetricsServer, ProxyServer } from "./Http/Servers.js"
import { Metrics } from "./Metrics.js"
import { RequestQueue } from "./RequestQueue.js"
import { Snapshot } from "./Snapshot.js"
import { TokenBucket } from "./TokenBucket.js"
import { Upstream } from "./Upstream.js"

/** Every service, from the leaves up; each is built once and shared. Needs `SidecarConfig`. */
export const services = Layer.merge(Snapshot.layer, Dispatcher.layer).pipe(
  Layer.provideMerge(RequestQueue.layer),
  Layer.provideMerge(Layer.mergeAll(TokenBucket.layer, Metrics.layer, Upstream.layer))
)

/** The two listeners on top of the services. Closing it drains the proxy first. */
export const layer = Layer.mergeAll(ProxyServer.layer, MetricsServer.layer).pipe(Layer.provideMerge(services))
