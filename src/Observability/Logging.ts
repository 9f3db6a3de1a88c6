import { Cause, Effect, HashMap, Layer, Logger } from "effect"
import { SidecarConfig } from "../Config/SidecarConfig.js"

/**
 * One flat JSON object per line: `{"time","level","msg",...fields}`. Log an object
 * (`Effect.logInfo({ msg: "request_completed", ... })`) to get its fields at the top level;
 * that costs a fraction of `annotateLogs`, which matters once per request.
 * Secrets stay `Redacted` and never reach it.
 */
const jsonLines = Logger.make<unknown, void>(({ annotations, cause, date, logLevel, message }) => {
  const line: Record<string, unknown> = { time: date.toISOString(), level: logLevel.label }
  for (const [key, value] of HashMap.toEntries(annotations)) line[key] = value
  for (const part of Array.isArray(message) ? message : [message]) {
    if (typeof part === "object" && part !== null) Object.assign(line, part)
    else line.msg = line.msg === undefined ? String(part) : `${String(line.msg)} ${String(part)}`
  }
  if (!Cause.isEmpty(cause)) line.cause = Cause.pretty(cause)
  process.stdout.write(`${JSON.stringify(line)}\n`)
})

export const layer = Layer.unwrapEffect(
  Effect.map(SidecarConfig, (config) =>
    Layer.merge(Logger.replace(Logger.defaultLogger, jsonLines), Logger.minimumLogLevel(config.logLevel)))
)
