import { ParseResult, Schema } from "effect"
import { structuredProblem } from "./SettingCodecs.js"
import { closest, settingNames, type settings, table, type SettingName } from "./Settings.js"
import type { SidecarConfigShape } from "./SidecarConfig.js"

type Settings = typeof settings
type HotName<K extends SettingName> = Settings[K] extends { readonly hot: infer H extends string } ? H : never
type HotFields = {
  readonly [K in SettingName as HotName<K>]: Schema.optionalWith<Settings[K]["schema"]["value"], { exact: true }>
}
export type HotField = { [K in SettingName]: Settings[K] extends { readonly hot: string } ? Settings[K]["field"] : never }[SettingName]

/** The hot settings by their admin names, in precedence order (`queue_full_policy` before `fallback_enabled_passthrough`). */
export const hotSettings: ReadonlyArray<SettingName> = settingNames.filter((name) => table[name].hot !== undefined)
export const hotNames: ReadonlyArray<string> = hotSettings.map((name) => table[name].hot ?? name)

/**
 * An admin API patch (JSON): the hot-changeable settings by their admin names, each validated by the
 * same schema as its environment variable; any other key is refused.
 */
export const HotPatch = Schema.Struct(
  Object.fromEntries(hotSettings.map((name) => [table[name].hot, Schema.optionalWith(table[name].schema.value, { exact: true })])) as unknown as HotFields
).annotations({
  parseOptions: { onExcessProperty: "error" },
  message: () => `expected a JSON object of hot settings (${hotNames.join(", ")})`
})
export type HotPatch = typeof HotPatch.Type

/** Typed changes to the running configuration; the admin API and a SIGHUP reload both apply these. */
export type HotChanges = { readonly [F in HotField]?: SidecarConfigShape[F] }

/** A decoded patch as changes; when two names set one field, the first in `settings` order wins. */
export const hotChanges = (patch: HotPatch): HotChanges => {
  const values: Readonly<Record<string, unknown>> = patch
  const changes: Record<string, unknown> = {}
  for (const name of hotSettings) {
    const { field, hot } = table[name]
    const value = hot === undefined ? undefined : values[hot]
    if (value !== undefined && !(field in changes)) changes[field] = value
  }
  return changes as HotChanges
}

/** The field and reason a patch was refused for; an unknown name gets the closest hot name as a hint. */
export const patchProblem = (error: ParseResult.ParseError): { readonly field: string; readonly reason: string } => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  const field = String(issue?.path[0] ?? "body")
  const setting = hotSettings.find((name) => table[name].hot === field)
  // Inside a structured setting (clients), the reason names the member: `alice.rpm: expected ...`.
  if (setting !== undefined && table[setting].schema.structured === true && (issue?.path.length ?? 0) > 1) {
    return { field, reason: structuredProblem(error, table[setting].schema.expected, 1) }
  }
  if (issue?._tag !== "Unexpected") return { field, reason: issue?.message ?? "invalid" }
  const suggestion = closest(field, hotNames)
  return {
    field,
    reason: `not a hot setting${suggestion === undefined ? "" : ` (did you mean ${suggestion}?)`}; hot settings: ${hotNames.join(", ")}`
  }
}
