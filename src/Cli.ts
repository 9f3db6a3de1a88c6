import { Effect, Layer } from "effect"
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"
import { parse as parseYaml } from "yaml"
import { ConfigInvalid } from "./ConfigInvalid.js"
import { settingName, settings } from "./Settings.js"
import { SidecarConfig } from "./SidecarConfig.js"
import { version } from "./Version.js"

export type Command =
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }
  | { readonly _tag: "Run"; readonly configFile: string | undefined }
  | { readonly _tag: "Invalid"; readonly message: string }

/** `nvidia-sidecar [--config FILE.yaml] [--help] [--version]` */
export const parseCommand = (argv: ReadonlyArray<string>): Command => {
  let values: { config?: string | undefined; help?: boolean | undefined; version?: boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" }, version: { type: "boolean", short: "v" } },
      strict: true,
      allowPositionals: false
    }).values
  } catch (error) {
    return { _tag: "Invalid", message: `${error instanceof Error ? error.message : String(error)}\nTry: nvidia-sidecar --help` }
  }
  if (values.help === true) return { _tag: "Help" }
  if (values.version === true) return { _tag: "Version" }
  return { _tag: "Run", configFile: values.config }
}

export const helpText = (): string => {
  const width = Math.max(...Object.keys(settings).map((n) => n.length))
  const rows = Object.entries(settings).map(([name, s]) =>
    `  ${name.padEnd(width)}  ${s.doc}${s.default === undefined ? "" : ` (default: ${s.default})`}`
  )
  return [
    `nvidia-sidecar ${version} — rate-limiting sidecar proxy for OpenAI-compatible APIs`,
    "",
    "Usage: nvidia-sidecar [--config FILE.yaml] [--help] [--version]",
    "",
    "Options:",
    "  -c, --config FILE  YAML file of settings (keys: env names or short forms, e.g. rate_rpm: 60)",
    "  -h, --help         show this help",
    "  -v, --version      print the version",
    "",
    "Settings (load order: defaults < YAML file < environment):",
    ...rows,
    `  ${"OTEL_EXPORTER_OTLP_ENDPOINT".padEnd(width)}  OpenTelemetry OTLP/HTTP endpoint; unset = no trace export`,
    `  ${"OTEL_SERVICE_NAME".padEnd(width)}  service name on exported spans (default: nvidia-sidecar)`,
    "",
    "Endpoints: proxy on SIDECAR_HOST:SIDECAR_PORT (/v1/*, /health, /health/ready, /status, /api/dashboard,",
    "/api/admin/config); Prometheus on SIDECAR_HOST:SIDECAR_METRICS_PORT/metrics."
  ].join("\n")
}

export interface ConfigFile {
  readonly values: Readonly<Record<string, string>>
  /** Unknown keys and non-scalar values, reported together with any bad value. */
  readonly problems: ReadonlyArray<string>
}

/** Settings from a YAML mapping of scalars, keyed by env name or short form. */
export const readConfigFile = (path: string): Effect.Effect<ConfigFile, ConfigInvalid> =>
  Effect.try({
    try: () => parseYaml(readFileSync(path, "utf8")) as unknown,
    catch: (error) => new ConfigInvalid({ problems: [`--config ${path}: ${error instanceof Error ? error.message : "unreadable"}`] })
  }).pipe(
    Effect.flatMap((doc) => {
      if (doc === null || doc === undefined) return Effect.succeed({ values: {}, problems: [] })
      if (typeof doc !== "object" || Array.isArray(doc)) {
        return Effect.fail(new ConfigInvalid({ problems: [`--config ${path}: expected a mapping of settings`] }))
      }
      const values: Record<string, string> = {}
      const problems: Array<string> = []
      for (const [key, value] of Object.entries(doc)) {
        const name = settingName(key)
        if (!(name in settings)) problems.push(`${path}: unknown setting "${key}"`)
        else if (typeof value === "object" && value !== null) problems.push(`${name}: expected a scalar value`)
        else if (value !== null) values[name] = String(value)
      }
      return Effect.succeed({ values, problems })
    })
  )

/** The config layer for a run: YAML file (if any) under the process environment; one error lists every problem. */
export const configLayer = (configFile: string | undefined, env: Readonly<Record<string, string | undefined>>) =>
  Layer.effect(
    SidecarConfig,
    Effect.gen(function*() {
      const file = configFile === undefined ? { values: {}, problems: [] } : yield* readConfigFile(configFile)
      const config = yield* SidecarConfig.load(env, file.values).pipe(
        Effect.mapError((e) => new ConfigInvalid({ problems: [...file.problems, ...e.problems] }))
      )
      if (file.problems.length > 0) return yield* new ConfigInvalid({ problems: file.problems })
      return config
    })
  )
