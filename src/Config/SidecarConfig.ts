import { Context, Duration, Effect, Either, Layer, type LogLevel, Option, type ParseResult, Redacted, Schema, type Types } from "effect"
import { ConfigInvalid } from "./ConfigInvalid.js"
import { maskUserinfo, show, structuredProblem } from "./SettingCodecs.js"
import { closest, settingNames, type settings, table, type SettingName } from "./Settings.js"

export { QueueFullPolicy } from "./Settings.js"

type Settings = typeof settings
type Typed<S extends Settings[SettingName]> = Schema.Schema.Type<S["schema"]["value"]>
type FieldValue<S extends Settings[SettingName]> = S extends { readonly default: string } | { readonly defaultFrom: string }
  ? Typed<S>
  : Option.Option<Typed<S>>

/** The validated configuration: one field per entry of `settings` (Settings.ts), `Option` where unset by default. */
export type SidecarConfigShape = Types.Simplify<{ readonly [K in SettingName as Settings[K]["field"]]: FieldValue<Settings[K]> }>
export type ConfigField = keyof SidecarConfigShape

/** Validated configuration. Hot-changeable values live in the services that use them. */
export class SidecarConfig extends Context.Tag("sidecar/SidecarConfig")<SidecarConfig, SidecarConfigShape>() {
  /** defaults < YAML file < environment; every bad field is reported at once. */
  static readonly load = (
    env: Readonly<Record<string, string | undefined>>,
    file: Readonly<Record<string, string>> = {}
  ): Effect.Effect<SidecarConfigShape, ConfigInvalid> =>
    Effect.suspend(() => {
      const decoded = decodeSettings(env, file)
      if (Either.isLeft(decoded)) return Effect.fail(new ConfigInvalid({ problems: decoded.left }))
      const config = decoded.right
      if (config.port !== 0 && config.port === config.metricsPort) {
        return Effect.fail(new ConfigInvalid({ problems: ["SIDECAR_METRICS_PORT: must differ from SIDECAR_PORT"] }))
      }
      return Effect.succeed(config)
    })

  static readonly layerFrom = (env: Readonly<Record<string, string | undefined>>, file?: Readonly<Record<string, string>>) =>
    Layer.effect(SidecarConfig, SidecarConfig.load(env, file))

  /** Tests state only the values they care about. */
  static readonly layerTest = (overrides: Partial<SidecarConfigShape> = {}) =>
    Layer.effect(SidecarConfig, Effect.map(SidecarConfig.load({ SIDECAR_PORT: "0", SIDECAR_METRICS_PORT: "0" }), (c) => ({
      ...c,
      upstream: "http://127.0.0.1:9/v1",
      apiKey: Option.some(Redacted.make("test-key")),
      ...overrides
    })))
}

/** Which settings fill each field, in precedence order. */
export const fieldSources: ReadonlyMap<ConfigField, ReadonlyArray<SettingName>> = (() => {
  const sources = new Map<ConfigField, Array<SettingName>>()
  for (const name of settingNames) {
    const field = table[name].field as ConfigField
    sources.set(field, [...(sources.get(field) ?? []), name])
  }
  return sources
})()

export interface UnknownVariable {
  readonly name: string
  readonly suggestion: SettingName | undefined
  /** e.g. `SIDECAR_RATE_PRM is not a setting (ignored); did you mean SIDECAR_RATE_RPM?` */
  readonly message: string
}

/** `SIDECAR_*` variables that are not settings: likely typos, to be logged as warnings at start-up. */
export const unknownVariables = (env: Readonly<Record<string, string | undefined>>): ReadonlyArray<UnknownVariable> =>
  Object.keys(env)
    .filter((name) => env[name] !== undefined && name.toUpperCase().startsWith("SIDECAR_") && !(name in table))
    .sort()
    .map((name) => {
      const suggestion = closest(name, settingNames)
      const hint = suggestion === undefined ? "" : `; did you mean ${suggestion}?`
      return { name, suggestion, message: `${name} is not a setting (ignored)${hint}` }
    })

const textSchemas = new Map(settingNames.map((name) => [name, Schema.compose(table[name].schema.text, table[name].schema.value)]))

/** One `NAME: expected ..., got ...` line per bad setting (`NAME: path.to.member: expected ...` for a
 * structured one); a secret's value is never shown. */
function problem(name: SettingName, text: string, error: ParseResult.ParseError): string {
  const setting = table[name]
  if (setting.schema.structured === true) return `${name}: ${structuredProblem(error, setting.schema.expected)}`
  return setting.secret === true
    ? `${name}: expected ${setting.schema.expected} (the value is secret and not shown)`
    : `${name}: expected ${setting.schema.expected}, got ${show(text)}`
}

function decodeSettings(
  env: Readonly<Record<string, string | undefined>>,
  file: Readonly<Record<string, string>>
): Either.Either<SidecarConfigShape, ReadonlyArray<string>> {
  const nonEmpty = (s: string | undefined) => (s === "" ? undefined : s)
  const given = (name: SettingName) => nonEmpty(env[name]) ?? nonEmpty(file[name])
  const resolve = (name: SettingName): string | undefined => {
    const s = table[name]
    return given(name) ?? s.default ?? (s.defaultFrom === undefined ? undefined : resolve(s.defaultFrom as SettingName))
  }

  const problems: Array<string> = []
  const values = new Map<SettingName, unknown>()
  for (const name of settingNames) {
    const text = resolve(name)
    if (text === undefined) continue
    const decoded = Schema.decodeEither(textSchemas.get(name)!)(text)
    if (Either.isRight(decoded)) values.set(name, decoded.right)
    // A value borrowed from another setting (defaultFrom) is reported there.
    else if (given(name) !== undefined || table[name].default !== undefined) problems.push(problem(name, text, decoded.left))
  }
  if (problems.length > 0) return Either.left(problems)

  const config: Record<string, unknown> = {}
  for (const [field, sources] of fieldSources) {
    const chosen = sources.find((name) => given(name) !== undefined) ?? sources.find((name) => values.has(name))
    const optional = sources.every((name) => table[name].default === undefined && table[name].defaultFrom === undefined)
    const value = chosen === undefined ? undefined : values.get(chosen)
    config[field] = optional ? Option.fromNullable(value) : value
  }
  // Built field by field from the entries whose types define SidecarConfigShape.
  return Either.right(config as SidecarConfigShape)
}

/** Where this run's configuration came from: what a SIGHUP re-reads, and what start-up checks for typos. */
export class ConfigSource extends Context.Tag("sidecar/ConfigSource")<ConfigSource, {
  readonly configFile: string | undefined
  readonly env: Readonly<Record<string, string | undefined>>
}>() {}

/**
 * The effective configuration for the start-up log line: every setting by env name, secrets as
 * "(set)", credentials in URLs masked, durations in seconds.
 */
export const describeConfig = (config: SidecarConfigShape): Record<string, unknown> => {
  const values: Readonly<Record<string, unknown>> = config
  const described: Record<string, unknown> = {}
  for (const name of settingNames) {
    if (name === "SIDECAR_FALLBACK_PASSTHROUGH") continue // shown as the queue-full policy it sets
    const value = values[table[name].field]
    described[name] = table[name].secret === true ? (isSet(value) ? "(set)" : null) : display(value)
  }
  return described
}

const isSet = (value: unknown): boolean => !(Option.isOption(value) && Option.isNone(value))

function display(value: unknown): unknown {
  if (Option.isOption(value)) return Option.isNone(value) ? null : display(value.value)
  if (Duration.isDuration(value)) return Duration.toSeconds(value)
  if (Array.isArray(value)) return value.map(display)
  if (typeof value === "string") return maskUserinfo(value)
  if (typeof value === "object" && value !== null && "label" in value) return (value as LogLevel.LogLevel).label
  return value
}
