import { NodeSdk } from "@effect/opentelemetry"
import { OTLPTraceExporter as JsonExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { OTLPTraceExporter as ProtobufExporter } from "@opentelemetry/exporter-trace-otlp-proto"
import { BatchSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Config, Effect, Layer, Option } from "effect"
import { ConfigInvalid } from "../Config/ConfigInvalid.js"
import { version } from "../Version.js"

/** Spans stay off (no cost, the client's `traceparent` passes through) unless an OTLP endpoint is set. */
export const layerOff = Layer.setTracerEnabled(false)

/** Exports through `processor`; tests pass an in-memory exporter. */
export const layerWith = (processor: SpanProcessor, serviceName = "nvidia-sidecar") =>
  NodeSdk.layer(() => ({ resource: { serviceName, serviceVersion: version }, spanProcessor: processor }))

/** The OTLP/HTTP encodings we speak; gRPC is not bundled. */
export const protocols = ["http/protobuf", "http/json"] as const

/**
 * Standard OTel variables: OTLP/HTTP export when `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set,
 * encoded per `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (default `http/protobuf`, the spec's).
 * The exporter reads the endpoint, headers and timeout variables, and the SDK reads
 * `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, themselves.
 */
export const layer = Layer.unwrapEffect(
  Effect.gen(function*() {
    const endpoint = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT"))
    const tracesEndpoint = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if (Option.isNone(endpoint) && Option.isNone(tracesEndpoint)) return layerOff
    const serviceName = yield* Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault("nvidia-sidecar"))
    const protocol = yield* Config.string("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").pipe(
      Config.orElse(() => Config.string("OTEL_EXPORTER_OTLP_PROTOCOL")),
      Config.withDefault("http/protobuf")
    )
    if (!(protocols as ReadonlyArray<string>).includes(protocol)) {
      return yield* new ConfigInvalid({ problems: [`OTEL_EXPORTER_OTLP_PROTOCOL: expected one of ${protocols.join(", ")}, got ${JSON.stringify(protocol)}`] })
    }
    const exporter = protocol === "http/json" ? new JsonExporter() : new ProtobufExporter()
    return layerWith(new BatchSpanProcessor(exporter), serviceName)
  })
)
