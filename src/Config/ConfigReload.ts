import { Effect, Equal, Option, Redacted } from "effect"
import { loadConfig } from "./Cli.js"
import type { ConfigInvalid } from "./ConfigInvalid.js"
import { type HotChanges, hotSettings } from "./HotSettings.js"
import { table, type SettingName } from "./Settings.js"
import { fieldSources, type SidecarConfigShape } from "./SidecarConfig.js"

export interface Reload {
  /** Hot settings whose value changed: apply them as the admin API does. */
  readonly hot: HotChanges
  /** Settings that changed but only take effect after a restart: log them. */
  readonly restartNeeded: ReadonlyArray<SettingName>
  /** `current` with `hot` applied: what the process runs with now, the base for the next reload. */
  readonly running: SidecarConfigShape
}

/**
 * SIGHUP: re-reads and validates the config file (under the environment) exactly as start-up does.
 * A ConfigInvalid is to be logged while the process keeps running on `current`.
 */
export const reloadConfig = (
  current: SidecarConfigShape,
  configFile: string | undefined,
  env: Readonly<Record<string, string | undefined>>
): Effect.Effect<Reload, ConfigInvalid> => Effect.map(loadConfig(configFile, env), (next) => diffConfig(current, next))

const hotFields: ReadonlySet<string> = new Set(hotSettings.map((name) => table[name].field))

/** What changed from `current` to `next`, split into what can be applied now and what needs a restart. */
export const diffConfig = (current: SidecarConfigShape, next: SidecarConfigShape): Reload => {
  const hot: Record<string, unknown> = {}
  const restartNeeded: Array<SettingName> = []
  for (const [field, sources] of fieldSources) {
    if (same(current[field], next[field])) continue
    if (hotFields.has(field)) hot[field] = next[field]
    else restartNeeded.push(...sources)
  }
  const changes = hot as HotChanges
  return { hot: changes, restartNeeded, running: { ...current, ...changes } }
}

/** Structural equality for config values: Durations, Options, Redacted secrets, lists, log levels. */
function same(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]))
  if (Redacted.isRedacted(a) && Redacted.isRedacted(b)) return Redacted.value(a) === Redacted.value(b)
  if (Option.isOption(a) && Option.isOption(b)) {
    return Option.isNone(a) ? Option.isNone(b) : Option.isSome(b) && same(a.value, b.value)
  }
  // The clients table: plain data, compared by content.
  if (isPlainObject(a) && isPlainObject(b)) return JSON.stringify(a) === JSON.stringify(b)
  return Equal.equals(a, b)
}

const isPlainObject = (u: unknown): u is object => typeof u === "object" && u !== null && Object.getPrototypeOf(u) === Object.prototype
