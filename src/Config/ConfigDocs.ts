// --help, .env.example and the README's configuration table, all rendered from `settings`.
// `node scripts/config-docs.mjs` rewrites the two files; tests fail when they drift.
import { externalVariables, type Group, settingNames, table, type SettingName } from "./Settings.js"

/** The settings part of `--help`: one line per setting, then the library variables. */
export const helpRows = (): ReadonlyArray<string> => {
  const width = Math.max(...[...settingNames, ...externalVariables.map((v) => v.name)].map((n) => n.length))
  const rows = settingNames.map((name) => {
    const s = table[name]
    const fallback = s.defaultFrom ?? (s.default === "" ? "none" : s.default)
    const tags = [fallback === undefined ? "" : ` (default: ${fallback})`, s.hot === undefined ? "" : ` [hot: ${s.hot}]`]
    return `  ${name.padEnd(width)}  ${meaning(name, (c) => c.join(" | "))}${tags.join("")}`
  })
  return [...rows, ...externalVariables.map((v) => `  ${v.name.padEnd(width)}  ${v.doc}`)]
}

/** The README's table: every setting with its YAML key, default and admin name. */
export const renderConfigTable = (): string =>
  [
    "| env | YAML key | default | hot (admin field) | meaning |",
    "|---|---|---|---|---|",
    ...settingNames.map((name) => {
      const s = table[name]
      const fallback = s.defaultFrom !== undefined
        ? `= \`${s.defaultFrom}\``
        : s.default === undefined ? "(unset)" : s.default === "" ? "(empty)" : `\`${s.default}\``
      const hot = s.hot === undefined ? "" : `\`${s.hot}\``
      return `| \`${name}\` | \`${s.yaml}\` | ${fallback} | ${hot} | ${meaning(name, (c) => c.map((v) => `\`${v}\``).join(" / "))} |`
    })
  ].join("\n")

/** `.env.example`: every setting commented out at its default, grouped, with its notes. */
export const renderEnvExample = (): string => {
  const groups = new Map<Group, Array<SettingName>>()
  for (const name of settingNames) groups.set(table[name].group, [...(groups.get(table[name].group) ?? []), name])
  const sections = [...groups].map(([group, names]) => [banner(group), ...names.flatMap(envLines)].join("\n"))
  const tracing = [
    banner("tracing (standard OpenTelemetry variables; unset = no export)"),
    ...externalVariables.flatMap((v) => [`# ${sentence(v.doc)}`, `#${v.name}=`])
  ].join("\n")
  return [envHeader, ...sections, tracing].join("\n\n") + "\n"
}

const envHeader = `# nvidia-sidecar settings (SPEC section 7). Copy to /etc/nvidia-sidecar/env (systemd),
# pass with \`docker run --env-file\`, or export them. Load order:
# defaults < YAML file (--config FILE) < environment. An invalid value stops start-up.
#
# Generated from src/Settings.ts (node scripts/config-docs.mjs): edit the settings there.
# Every line is commented out at its default value: uncomment only what you change.
# Write values without quotes (docker --env-file keeps them literally).
# Keep the real file private (chmod 600): it holds the API key and the admin token.`

function meaning(name: SettingName, list: (choices: ReadonlyArray<string>) => string): string {
  const s = table[name]
  return s.schema.choices === undefined ? s.doc : `${s.doc}: ${list(s.schema.choices)}`
}

function envLines(name: SettingName): ReadonlyArray<string> {
  const s = table[name]
  return [
    `# ${sentence(meaning(name, (c) => c.join(" | ")))}`,
    ...(s.note ?? []).map((line) => `# ${line}`),
    ...(s.defaultFrom === undefined ? [] : [`# Unset: the value of ${s.defaultFrom}.`]),
    ...(s.hot === undefined ? [] : [`# Changeable at run time (admin API field ${s.hot}).`]),
    `#${name}=${s.default ?? ""}`
  ]
}

function banner(title: string): string {
  return `# --- ${title} `.padEnd(97, "-")
}

function sentence(text: string): string {
  return `${text.charAt(0).toUpperCase()}${text.slice(1)}${text.endsWith(".") ? "" : "."}`
}
