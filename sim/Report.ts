import { type Priority, priorities } from "./Clients.js"
import type { Scenario } from "./Scenarios.js"
import type { RatePoint, Trace } from "./Trace.js"

/** The figures of one run, all after the warm-up unless the name says otherwise. */
export interface Metrics {
  /** Upstream successes / what the quota (or the concurrency cap) allowed. */
  readonly efficiency: number
  /** 429 share of upstream answers. */
  readonly share429: number
  /** Upstream 429s over the whole run, warm-up included. */
  readonly upstream429: number
  /** Clients that saw an upstream 429 (retries exhausted), whole run. */
  readonly relayed429: number
  /** Clients that gave up while queued (offered above what the upstream allows). */
  readonly timeouts: number
  readonly waits: Readonly<Record<Priority, { readonly p50: number; readonly p95: number } | undefined>>
  /** Seconds after each quota step until the rate stays within 10 % of the new quota (null: never). */
  readonly converge: ReadonlyArray<{ readonly at: number; readonly seconds: number | null }>
  readonly minRpm: number
  readonly finalRpm: number
  readonly minRpmAfterBurst: number
  /** Seconds from the first spurious 429 until the rate is back at the configured rate for good. */
  readonly backToBaseSeconds: number
  readonly finalInflightLimit: number | undefined
  /** Share of the time after the warm-up the in-flight limit was exactly 4. */
  readonly limitAt4Share: number
  readonly sentDuringRetryAfter: number
  /** Longest time with requests waiting and nothing sent (s). */
  readonly longestStallS: number
}

export const metrics = (s: Scenario, t: Trace): Metrics => {
  const after = t.attempts.filter((a) => a.at >= s.warmupMs)
  const oks = after.filter((a) => a.status === 200).length
  const allowed = integrate((at) => Math.min(s.capacityRpm(at), s.clients.offeredRpm), s.warmupMs, s.durationMs) / 60_000
  const served = t.requests.filter((r) => r.arrivedAt >= s.warmupMs && r.outcome === "ok")
  const burst = t.attempts.find((a) => a.kind === "spurious")?.at
  return {
    efficiency: oks / allowed,
    share429: after.length === 0 ? 0 : (after.length - oks) / after.length,
    upstream429: t.attempts.filter((a) => a.status === 429).length,
    relayed429: t.requests.filter((r) => r.outcome === "relayed429").length,
    timeouts: t.requests.filter((r) => r.outcome === "timeout").length,
    waits: Object.fromEntries(priorities.map((p) => [p, waitsOf(served.filter((r) => r.priority === p).map((r) => r.queueMs))])) as Metrics["waits"],
    converge: s.steps.map((step, i) => ({
      at: step.at,
      seconds: settle(t.rate, step.at, s.steps[i + 1]?.at ?? s.durationMs, step.quotaRpm)
    })),
    minRpm: Math.min(...t.rate.map((p) => p.rpm)),
    finalRpm: t.rate.at(-1)?.rpm ?? s.baseRpm,
    minRpmAfterBurst: burst === undefined ? s.baseRpm : Math.min(rateAt(t.rate, burst), ...t.rate.filter((p) => p.at >= burst).map((p) => p.rpm)),
    backToBaseSeconds: burst === undefined ? 0 : backToBase(t.rate, burst, s.baseRpm),
    finalInflightLimit: t.inflightLimit.at(-1)?.limit,
    limitAt4Share: shareAt(t.inflightLimit, 4, s.warmupMs, s.durationMs),
    sentDuringRetryAfter: t.sentDuringRetryAfter,
    longestStallS: t.longestStall / 1000
  }
}

function integrate(f: (t: number) => number, from: number, to: number): number {
  let sum = 0
  for (let t = from; t < to; t += 1000) sum += f(t) * Math.min(1000, to - t)
  return sum
}

function waitsOf(ms: Array<number>): { p50: number; p95: number } | undefined {
  if (ms.length === 0) return undefined
  const sorted = [...ms].sort((a, b) => a - b)
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! / 1000
  return { p50: q(0.5), p95: q(0.95) }
}

function rateAt(rate: ReadonlyArray<RatePoint>, at: number): number {
  let rpm = rate[0]?.rpm ?? 0
  for (const p of rate) if (p.at <= at) rpm = p.rpm
  return rpm
}

/**
 * First time from which the rate stays within 10 % of `quota` until `until`, in seconds after
 * `from`. Excursions shorter than `probeMs` do not count: a probe above the quota that a 429
 * ends within two evaluation steps is the law working, not the law unsettled.
 */
function settle(rate: ReadonlyArray<RatePoint>, from: number, until: number, quota: number): number | null {
  const within = (rpm: number) => Math.abs(rpm - quota) <= 0.1 * quota
  let since: number | null = within(rateAt(rate, from)) ? from : null
  let outSince: number | null = since === null ? from : null
  for (const p of rate) {
    if (p.at <= from || p.at >= until) continue
    if (!within(p.rpm)) outSince ??= p.at
    else if (outSince !== null) {
      if (since === null || p.at - outSince > probeMs) since = p.at
      outSince = null
    }
  }
  if (outSince !== null && (since === null || until - outSince > probeMs)) return null
  return since === null ? null : (since - from) / 1000
}

const probeMs = 10_000

function backToBase(rate: ReadonlyArray<RatePoint>, from: number, base: number): number {
  let back = rateAt(rate, from) >= base ? from : Infinity
  for (const p of rate) {
    if (p.at < from) continue
    if (p.rpm < base) back = Infinity
    else if (back === Infinity) back = p.at
  }
  return (back - from) / 1000
}

function shareAt(points: Trace["inflightLimit"], value: number, from: number, to: number): number {
  let time = 0
  for (const [i, p] of points.entries()) {
    const start = Math.max(from, p.at)
    const end = Math.min(to, points[i + 1]?.at ?? to)
    if (end > start && p.limit === value) time += end - start
  }
  return time / (to - from)
}

export interface Row {
  readonly scenario: Scenario
  readonly law: string
  readonly m: Metrics
}

/** The markdown tables: the scenarios, then one line per scenario and law, targets marked per line. */
export const table = (rows: ReadonlyArray<Row>): string => {
  const scenarios = [...new Set(rows.map((r) => r.scenario))]
  const legend = ["| scenario | upstream and load |", "|---|---|", ...scenarios.map((s) => `| ${s.id} | ${s.title} |`)]
  const head = [
    "scenario", "law", "efficiency", "429 share", "upstream 429s", "client 429s", "timeouts",
    "wait p50/p95 s urgent", "high", "normal", "low", "rpm min/end", "longest stall s", "scenario figures", "targets"
  ]
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`]
  for (const { scenario: s, law, m } of rows) {
    const failed = s.targets.filter((t) => !t.met(m)).map((t) => t.name)
    const cells = [
      s.id, law, m.efficiency.toFixed(3), pct(m.share429), String(m.upstream429), String(m.relayed429), String(m.timeouts),
      ...priorities.map((p) => wait(m.waits[p])),
      `${round(m.minRpm)}/${round(m.finalRpm)}`,
      m.longestStallS.toFixed(0),
      figures(s, m),
      s.targets.length === 0 ? "—" : failed.length === 0 ? "all met" : `missed: ${failed.join("; ")}`
    ]
    lines.push(`| ${cells.join(" | ")} |`)
  }
  return [...legend, "", ...lines].join("\n")
}

/** One line per scenario and law over many seeds: how often the targets held, and the spread. */
export const seedTable = (groups: ReadonlyArray<ReadonlyArray<Row>>): string => {
  const head = ["scenario", "law", "seeds with all targets met", "efficiency min–max", "429 share max", "client 429s max", "settles max"]
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`]
  for (const rows of groups) {
    const first = rows[0]
    if (first === undefined) continue
    const s = first.scenario
    const ms = rows.map((r) => r.m)
    const met = ms.filter((m) => s.targets.every((t) => t.met(m))).length
    const eff = ms.map((m) => m.efficiency)
    const settle = s.steps.map((_, i) => Math.max(...ms.map((m) => m.converge[i]?.seconds ?? Infinity)))
    lines.push(`| ${[
      s.id, first.law, s.targets.length === 0 ? "—" : `${met}/${rows.length}`,
      `${Math.min(...eff).toFixed(3)}–${Math.max(...eff).toFixed(3)}`,
      pct(Math.max(...ms.map((m) => m.share429))),
      String(Math.max(...ms.map((m) => m.relayed429))),
      settle.length === 0 ? "—" : settle.map((x) => (Number.isFinite(x) ? `${x.toFixed(0)} s` : "never")).join(" / ")
    ].join(" | ")} |`)
  }
  return lines.join("\n")
}

/** What each kind of scenario is about: convergence, the burst, the in-flight limit, Retry-After. */
function figures(s: Scenario, m: Metrics): string {
  const out: Array<string> = []
  const seconds = (x: number | null) => (x === null ? "never" : `${x.toFixed(0)} s`)
  if (m.converge.length > 0) out.push(`settles ${m.converge.map((c) => seconds(c.seconds)).join(" / ")}`)
  if (s.upstream.spurious !== undefined) out.push(`min ${round(m.minRpmAfterBurst)} rpm, back in ${seconds(Number.isFinite(m.backToBaseSeconds) ? m.backToBaseSeconds : null)}`)
  if (s.upstream.concurrencyCap !== undefined) out.push(`limit ${m.finalInflightLimit ?? "none"} (at 4: ${pct(m.limitAt4Share)})`)
  if (s.upstream.retryAfter) out.push(`sent during Retry-After: ${m.sentDuringRetryAfter}`)
  return out.length === 0 ? "—" : out.join("; ")
}

const pct = (x: number) => `${(x * 100).toFixed(1)} %`
const round = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(1))
const wait = (w: { p50: number; p95: number } | undefined) => (w === undefined ? "—" : `${w.p50.toFixed(0)}/${w.p95.toFixed(0)}`)

/** Real engine next to the pure one, same scenario, law and seed: the headline figures, real / pure. */
export const comparison = (pairs: ReadonlyArray<readonly [Row, Row]>): string => {
  const head = ["scenario", "law", "efficiency real / pure", "429 share", "upstream 429s", "client 429s", "timeouts", "scenario figures real / pure", "targets real / pure"]
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`]
  const met = (r: Row) => {
    const failed = r.scenario.targets.filter((t) => !t.met(r.m)).length
    return r.scenario.targets.length === 0 ? "—" : failed === 0 ? "all met" : `${failed} missed`
  }
  for (const [real, pure] of pairs) {
    const s = real.scenario
    lines.push(`| ${[
      s.id, real.law,
      `${real.m.efficiency.toFixed(3)} / ${pure.m.efficiency.toFixed(3)}`,
      `${pct(real.m.share429)} / ${pct(pure.m.share429)}`,
      `${real.m.upstream429} / ${pure.m.upstream429}`,
      `${real.m.relayed429} / ${pure.m.relayed429}`,
      `${real.m.timeouts} / ${pure.m.timeouts}`,
      `${figures(s, real.m)} / ${figures(s, pure.m)}`,
      `${met(real)} / ${met(pure)}`
    ].join(" | ")} |`)
  }
  return lines.join("\n")
}
