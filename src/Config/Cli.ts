import { Effect, Layer } from "effect"
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"
import { parse as parseYaml } from "yaml"
import { ConfigInvalid } from "./ConfigInvalid.js"
import { helpRows } from "./ConfigDocs.js"
import { hotSettings } from "./HotSettings.js"
import { closest, settingForKey, settingNames, table } from "./Settings.js"
import { SidecarConfig, type SidecarConfigShape } from "./SidecarConfig.js"
import { version } from "../Version.js"

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

export const helpText = (): string =>
  [
    `nvidia-sidecar ${version} — rate-limiting sidecar proxy for OpenAI-compatible APIs`,
    "",
    "Usage: nvidia-sidecar [--config FILE.yaml] [--help] [--version]",
    "",
    "Options:",
    "  -c, --config FILE  YAML file of settings (keys: env names or short forms, e.g. rate_rpm: 60)",
    "  -h, --help         show this help",
    "  -v, --version      print the version",
    "",
    "Settings (load order: defaults < YAML file < environment; [hot: name] = changeable at run time",
    "through the admin API under that name):",
    ...helpRows(),
    "",
    "Endpoints: proxy on SIDECAR_HOST:SIDECAR_PORT (/v1/*, /health, /health/ready, /status, /api/dashboard,",
    "/api/admin/config); Prometheus on SIDECAR_HOST:SIDECAR_METRICS_PORT/metrics."
  ].join("\n")

export interface ConfigFile {
  readonly values: Readonly<Record<string, string>>
  /** Unknown keys and non-scalar values, reported together with any bad value. */
  readonly problems: ReadonlyArray<string>
}

/** Settings from a YAML mapping of scalars (and the `clients:` mapping), keyed by env name or short form. */
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
        const name = settingForKey(key)
        if (name === undefined) problems.push(unknownKey(path, key))
        else if (name in values) problems.push(`${path}: "${key}" sets ${name} a second time`)
        else if (typeof value === "object" && value !== null) {
          // A structured setting (clients:) is read as the JSON its environment variable holds.
          if (table[name].schema.structured === true) values[name] = JSON.stringify(value)
          else problems.push(`${name}: expected a scalar value`)
        }
        else if (value !== null) values[name] = String(value)
      }
      return Effect.succeed({ values, problems })
    })
  )

/** The configuration of a run: YAML file (if any) under the environment; one error lists every problem.
 * Start-up and a SIGHUP reload both read it this way. */
export const loadConfig = (
  configFile: string | undefined,
  env: Readonly<Record<string, string | undefined>>
): Effect.Effect<SidecarConfigShape, ConfigInvalid> =>
  Effect.gen(function*() {
    const file = configFile === undefined ? { values: {}, problems: [] } : yield* readConfigFile(configFile)
    const config = yield* SidecarConfig.load(env, file.values).pipe(
      Effect.mapError((e) => new ConfigInvalid({ problems: [...file.problems, ...e.problems] }))
    )
    if (file.problems.length > 0) return yield* new ConfigInvalid({ problems: file.problems })
    return config
  })

/** The config layer for a run. */
export const configLayer = (configFile: string | undefined, env: Readonly<Record<string, string | undefined>>) =>
  Layer.effect(SidecarConfig, loadConfig(configFile, env))

/** An unknown key, with the nearest setting in the key's own style (env name or short name). */
function unknownKey(path: string, key: string): string {
  const admin = hotSettings.find((name) => table[name].hot === key.trim().toLowerCase())
  const hint = admin !== undefined
    ? ` (did you mean ${table[admin].yaml}? ${key} is its admin API name)`
    : suggest(key)
  return `${path}: unknown setting "${key}"${hint}`
}

function suggest(key: string): string {
  const asEnv = key.trim().toUpperCase().startsWith("SIDECAR_")
  const suggestion = asEnv ? closest(key, settingNames) : closest(key, settingNames.map((name) => table[name].yaml))
  return suggestion === undefined ? "" : ` (did you mean ${suggestion}?)`
}
