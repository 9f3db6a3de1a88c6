import { Duration, Effect, Exit, Layer, Logger, LogLevel, Scope } from "effect"
import type { Resource } from "@effect/opentelemetry"
import * as App from "../../src/App.js"
import * as Tracing from "../../src/Observability/Tracing.js"
import { MetricsServer, ProxyServer } from "../../src/Server/Servers.js"
import { ConfigSource, SidecarConfig, type SidecarConfigShape } from "../../src/Config/SidecarConfig.js"

export interface RunningSidecar {
  readonly url: string
  readonly metricsUrl: string
  /** Closes the scope: drains like SIGTERM does. */
  readonly close: () => Promise<void>
}

/** The real sidecar, in-process, on port 0, against the test's upstream. */
export const startSidecar = async (
  overrides: Partial<SidecarConfigShape>,
  options: { readonly tracing?: Layer.Layer<never> | Layer.Layer<Resource.Resource> } = {}
): Promise<RunningSidecar> => {
  const scope = Effect.runSync(Scope.make())
  const layer = App.layer.pipe(
    Layer.provide([Logger.minimumLogLevel(LogLevel.None), options.tracing ?? Tracing.layerOff]),
    Layer.provide(SidecarConfig.layerTest({ drainTimeout: Duration.seconds(1), ...overrides })),
    Layer.provide(Layer.succeed(ConfigSource, { configFile: undefined, env: {} }))
  )
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const proxy = Effect.runSync(Effect.provide(ProxyServer, context))
  const metrics = Effect.runSync(Effect.provide(MetricsServer, context))
  return {
    url: `http://127.0.0.1:${proxy.port}`,
    metricsUrl: `http://127.0.0.1:${metrics.port}/metrics`,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
