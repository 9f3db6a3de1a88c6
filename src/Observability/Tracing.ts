import { NodeSdk } from "@effect/opentelemetry"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { BatchSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Config, Effect, Layer, Option } from "effect"
import { version } from "../Version.js"

/** Spans stay off (no cost, the client's `traceparent` passes through) unless an OTLP endpoint is set. */
export const layerOff = Layer.setTracerEnabled(false)

/** Exports through `processor`; tests pass an in-memory exporter. */
export const layerWith = (processor: SpanProcessor, serviceName = "nvidia-sidecar") =>
  NodeSdk.layer(() => ({ resource: { serviceName, serviceVersion: version }, spanProcessor: processor }))

/** Standard OTel variables: OTLP/HTTP export when `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set. */
export const layer = Layer.unwrapEffect(
  Effect.gen(function*() {
    const endpoint = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT"))
    const tracesEndpoint = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if (Option.isNone(endpoint) && Option.isNone(tracesEndpoint)) return layerOff
    const serviceName = yield* Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault("nvidia-sidecar"))
    // The exporter reads the endpoint, headers and timeout variables itself.
    return layerWith(new BatchSpanProcessor(new OTLPTraceExporter()), serviceName)
  })
)
