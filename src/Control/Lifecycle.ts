import { Effect, Layer, Option, Ref } from "effect"
import { reloadConfig } from "../Config/ConfigReload.js"
import { table } from "../Config/Settings.js"
import { ConfigSource, describeConfig, SidecarConfig, unknownVariables } from "../Config/SidecarConfig.js"
import * as Bridge from "../DataPath/Bridge.js"
import { version } from "../Version.js"
import { isLoopbackHost } from "./Admin.js"
import { Reconfigure } from "./Reconfigure.js"

/** Start-up: one line with the effective configuration, a warning per likely typo and per risky choice. */
export const startupLog = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* SidecarConfig
    const source = yield* ConfigSource
    yield* Effect.logInfo({ msg: "starting", version, config_file: source.configFile ?? null, config: describeConfig(config) })
    for (const unknown of unknownVariables(source.env)) yield* Effect.logWarning({ msg: "unknown_setting", variable: unknown.name, detail: unknown.message })
    if (Option.isNone(config.adminToken) && !isLoopbackHost(config.host)) {
      yield* Effect.logWarning({ msg: "admin_writes_disabled", detail: `listening on ${config.host} without SIDECAR_ADMIN_TOKEN: admin writes are refused until one is set` })
    }
  })
)

/**
 * SIGHUP re-reads the config file under the environment, as start-up does, and applies its hot
 * settings as the admin API does; a file that fails validation is refused and the process runs on.
 */
export const reloadOnHangup = Layer.scopedDiscard(
  Effect.gen(function*() {
    const source = yield* ConfigSource
    const reconfigure = yield* Reconfigure
    const running = yield* Ref.make(yield* SidecarConfig)
    const bridge = yield* Bridge.make

    const reload = Effect.gen(function*() {
      const outcome = yield* reloadConfig(yield* Ref.get(running), source.configFile, source.env)
      yield* reconfigure.apply(outcome.hot)
      yield* Ref.set(running, outcome.running)
      yield* Effect.logInfo({
        msg: "config_reloaded",
        applied: Object.keys(outcome.hot),
        restart_needed: outcome.restartNeeded
      })
      if (outcome.restartNeeded.length > 0) {
        yield* Effect.logWarning({ msg: "config_restart_needed", settings: outcome.restartNeeded, hot_settings: Object.values(table).flatMap((s) => (s.hot === undefined ? [] : [s.yaml])) })
      }
    }).pipe(
      Effect.catchAll((error) =>
        Effect.logError({ msg: "config_reload_refused", problems: error._tag === "ConfigInvalid" ? error.problems : [`${error.field}: ${error.reason}`] })
      )
    )

    const onHangup = () => void bridge.run(reload)
    yield* Effect.acquireRelease(
      Effect.sync(() => process.on("SIGHUP", onHangup)),
      () => Effect.sync(() => process.off("SIGHUP", onHangup))
    )
  })
)
