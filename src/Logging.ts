import { Effect, Layer, Logger } from "effect"
import { SidecarConfig } from "./SidecarConfig.js"

/** One JSON object per line, at the configured level. Secrets stay `Redacted` and never reach it. */
export const layer = Layer.unwrapEffect(
  Effect.map(SidecarConfig, (config) => Layer.merge(Logger.json, Logger.minimumLogLevel(config.logLevel)))
)
