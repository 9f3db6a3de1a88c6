// Observability artefacts in deploy/: the Prometheus alert rules (checked and unit-tested with
// promtool) and the Grafana dashboard, whose queries may only name series a real sidecar exposes.
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parse as parseYaml } from "yaml"
import { scrape } from "./support/Observe.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const deploy = (file: string) => join(root, "deploy", file)
const promtool = spawnSync("sh", ["-c", "command -v promtool"], { stdio: "ignore" }).status === 0
const runPromtool = (...args: ReadonlyArray<string>) => {
  const run = spawnSync("promtool", args, { encoding: "utf8", cwd: join(root, "deploy") })
  return { status: run.status, output: `${run.stdout}${run.stderr}` }
}

interface Rule {
  readonly alert?: string
  readonly record?: string
  readonly expr: string
  readonly for?: string
  readonly labels?: Record<string, string>
  readonly annotations?: Record<string, string>
}
const rules = (parseYaml(readFileSync(deploy("prometheus-alerts.yml"), "utf8")) as { groups: Array<{ rules: Array<Rule> }> }).groups.flatMap((g) => g.rules)

interface Panel {
  readonly id: number
  readonly type: string
  readonly title: string
  readonly datasource?: { readonly type: string; readonly uid: string }
  readonly gridPos: { readonly h: number; readonly w: number; readonly x: number; readonly y: number }
  readonly targets?: Array<{ readonly expr: string }>
  readonly panels?: Array<Panel>
}
interface Dashboard {
  readonly schemaVersion: number
  readonly __inputs: Array<{ readonly name: string; readonly type: string; readonly pluginId: string }>
  readonly panels: Array<Panel>
  readonly templating: { readonly list: Array<{ readonly name: string; readonly definition: string }> }
}
const dashboard = JSON.parse(readFileSync(deploy("grafana-dashboard.json"), "utf8")) as Dashboard
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])])
const panelExprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr))

// Standard series a Prometheus server adds itself; histogram series suffixes.
const standard = new Set(["up"])
const histogramSuffix = /_(bucket|sum|count)$/

const keywords = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"])

/** Metric names a PromQL expression selects (functions, keywords, labels, durations and Grafana variables left out). */
const metricNames = (expr: string): Array<string> => {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, "\"\"")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\$\{?\w+\}?/g, " ")
  const names = new Set<string>()
  for (const match of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const at = match.index
    const before = bare[at - 1] ?? " "
    if (/[0-9.]/.test(before)) continue // 1e3, 5m
    if (bare.slice(at + match[0].length).trimStart().startsWith("(")) continue // a function
    if (!keywords.has(match[0].toLowerCase())) names.add(match[0])
  }
  return [...names]
}

/** Label names an expression matches on or groups by. */
const labelNames = (expr: string): Array<string> => {
  const names = new Set<string>()
  for (const [, list] of expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
    for (const name of (list ?? "").split(",")) if (name.trim() !== "") names.add(name.trim())
  }
  for (const [, matchers] of expr.matchAll(/\{([^}]*)\}/g)) {
    for (const [, name] of (matchers ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) names.add(name ?? "")
  }
  return [...names]
}

let sidecar: RunningSidecar
let exposition: string
beforeAll(async () => {
  sidecar = await startSidecar({})
  exposition = await scrape(sidecar.metricsUrl)
})
afterAll(() => sidecar.close())

/** Series types and label names in the scrape of a sidecar that has served nothing yet. */
const exposed = () => {
  const types = new Map<string, string>()
  for (const [, name, type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(name ?? "", type ?? "")
  const labels = new Set(["job", "instance"])
  for (const [, set] of exposition.matchAll(/^[a-zA-Z_:][a-zA-Z0-9_:]*\{([^}]*)\}/gm)) {
    for (const [, name] of (set ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(name ?? "")
  }
  const exists = (name: string) =>
    standard.has(name) || types.has(name) || (histogramSuffix.test(name) && types.get(name.replace(histogramSuffix, "")) === "histogram")
  return { exists, labels }
}

describe("metric name extraction (used below)", () => {
  it("finds the selected series and nothing else", () => {
    const expr = "histogram_quantile(0.99, sum by (le, priority) (rate(a_seconds_bucket{job=~\"$job\", x=\"y z\"}[$__rate_interval]))) / on (job) b_total offset 5m > 1e3 unless c"
    expect(metricNames(expr).sort()).toEqual(["a_seconds_bucket", "b_total", "c"])
    expect(labelNames(expr).sort()).toEqual(["job", "le", "priority", "x"])
  })
})

describe("Prometheus alert rules", () => {
  it.skipIf(!promtool)("pass promtool check rules", () => {
    const check = runPromtool("check", "rules", "prometheus-alerts.yml")
    expect(check.output).toContain(`SUCCESS: ${rules.length} rules found`)
    expect(check.status).toBe(0)
  })

  it.skipIf(!promtool)("pass their promtool unit tests (floor, queue near full, unreachable, down, retreat, 429 share)", () => {
    const test = runPromtool("test", "rules", "prometheus-alerts.test.yml")
    expect(test.output).toContain("SUCCESS")
    expect(test.output).not.toContain("FAILED")
    expect(test.status).toBe(0)
    const tested = readFileSync(deploy("prometheus-alerts.test.yml"), "utf8")
    for (const alert of ["SidecarRateAtFloor", "SidecarQueueNearFull", "SidecarUpstreamUnreachable", "SidecarDown", "SidecarLimitNotShared"]) {
      expect(tested, alert).toContain(`alertname: ${alert}`)
    }
  })

  it("cover the states an operator must act on, each with a severity, a summary and a description", () => {
    expect(rules.map((r) => r.alert)).toEqual(expect.arrayContaining([
      "SidecarDown", "SidecarUpstreamUnreachable", "SidecarRateAtFloor", "SidecarRetreatPersistent", "SidecarQueueNearFull", "SidecarClients429High", "SidecarLimitNotShared"
    ]))
    for (const rule of rules) {
      expect(rule.alert, rule.expr).toBeDefined()
      expect(["critical", "warning"], rule.alert).toContain(rule.labels?.["severity"])
      expect(rule.annotations?.["summary"], rule.alert).toBeTruthy()
      expect(rule.annotations?.["description"], rule.alert).toBeTruthy()
      expect(rule.for, rule.alert).toMatch(/^\d+m$/)
    }
  })

  it("select only series and labels a running sidecar exposes", () => {
    const { exists, labels } = exposed()
    for (const rule of rules) {
      expect(metricNames(rule.expr).filter((name) => !exists(name)), rule.alert).toEqual([])
      expect(labelNames(rule.expr).filter((name) => !labels.has(name)), rule.alert).toEqual([])
    }
  })
})

describe("Grafana dashboard", () => {
  it("is an importable dashboard on a ${DS_PROMETHEUS} datasource input", () => {
    expect(dashboard.schemaVersion).toBe(39)
    expect(dashboard.__inputs).toEqual([expect.objectContaining({ name: "DS_PROMETHEUS", type: "datasource", pluginId: "prometheus" })])
    expect(panels.length).toBeGreaterThan(10)
    for (const panel of panels) {
      expect(panel.datasource, panel.title).toEqual({ type: "prometheus", uid: "${DS_PROMETHEUS}" })
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0)
    }
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length)
  })

  it("lays its panels out without overlap on the 24-column grid", () => {
    const cells = new Set<string>()
    for (const { gridPos: g, title } of panels) {
      expect(g.x + g.w, title).toBeLessThanOrEqual(24)
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          expect(cells.has(`${x},${y}`), `${title} overlaps at ${x},${y}`).toBe(false)
          cells.add(`${x},${y}`)
        }
      }
    }
  })

  it("shows what an operator looks for", () => {
    const all = panelExprs.join("\n")
    for (const needle of [
      "sidecar_queue_depth", "sidecar_queue_max", "sidecar_effective_rate_rpm", "sidecar_configured_rate_rpm", "sidecar_quota_estimate_rpm",
      "status=\"429\"", "sidecar_upstream_429_rate", "histogram_quantile(0.99, sum by (le) (rate(sidecar_request_duration_seconds_bucket",
      "sidecar_upstream_latency_seconds_bucket", "sidecar_stream_first_byte_seconds_bucket", "sidecar_usage_tokens_total",
      "sum by (status) (rate(sidecar_requests_total", "sidecar_retreat_state"
    ]) expect(all, needle).toContain(needle)
  })

  it("queries only series and labels a running sidecar exposes", () => {
    const { exists, labels } = exposed()
    for (const expr of panelExprs) {
      expect(metricNames(expr).length, expr).toBeGreaterThan(0)
      expect(metricNames(expr).filter((name) => !exists(name)), expr).toEqual([])
      expect(labelNames(expr).filter((name) => !labels.has(name)), expr).toEqual([])
    }
    for (const variable of dashboard.templating.list) {
      const metric = /label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(variable.definition)?.[1] ?? ""
      expect(exists(metric), variable.name).toBe(true)
    }
  })

  it.skipIf(!promtool)("has only queries Prometheus parses", () => {
    // Each query as a recording rule, Grafana's variables replaced by what Grafana sends.
    const recorded = panelExprs.map((expr, i) => ({
      record: `dashboard:query_${i}`,
      expr: expr.replaceAll("$__rate_interval", "1m").replaceAll("$job", ".*").replaceAll("$instance", ".*")
    }))
    const dir = mkdtempSync(join(tmpdir(), "sidecar-dashboard-"))
    try {
      writeFileSync(join(dir, "queries.yml"), JSON.stringify({ groups: [{ name: "dashboard", rules: recorded }] }))
      const check = spawnSync("promtool", ["check", "rules", join(dir, "queries.yml")], { encoding: "utf8" })
      expect(`${check.stdout}${check.stderr}`).toContain(`SUCCESS: ${recorded.length} rules found`)
      expect(check.status).toBe(0)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
