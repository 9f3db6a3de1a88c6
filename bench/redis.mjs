// Shared limit on Redis (issue 11), run by run.mjs as `--suite redis`.
//
// Three real sidecar processes share one redis-server (started here on a free loopback port, no
// persistence unless --redis-aof) in front of one mock upstream that enforces a quota of
// REDIS.quota requests per rolling 60 s (accepted requests in (t - 60 s, t], as sim/Upstream.ts
// "sliding") and answers 429 WITHOUT Retry-After over it. Each sidecar has SIDECAR_RATE_RPM = the
// quota. Clients offer 3x the quota for D s (open loop, round-robin over the three sidecars,
// priorities mixed).
// Variants: shared (Redis up throughout); local and closed (Redis SIGKILLed for 30 s in the middle,
// restarted on the same port, with SIDECAR_REDIS_FAILURE=local|closed); latency (c = 1 through one
// sidecar with Redis vs the same settings without, a limit too high to bite, a 0 ms mock).
import { execFileSync, spawn } from "node:child_process"
import fs from "node:fs"
import http from "node:http"
import net from "node:net"
import os from "node:os"
import path from "node:path"
import { performance } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"

export const REDIS = {
  quota: 40, // mock: accepted requests per rolling 60 s; also each sidecar's SIDECAR_RATE_RPM
  offered: 3, // × quota, over all sidecars
  replicas: 3,
  latencyMs: 300, // mock answer time (200s)
  queueTimeout: 20, // SIDECAR_QUEUE_TIMEOUT: the excess is answered (429) within the run
  mix: ["normal", "high", "low", "normal", "urgent", "normal", "low", "high", "normal", "low"],
  pollMs: 250, // backend state poll of each replica's /metrics
  hungMs: 60_000 // a request unanswered this long is "hung"
}
export const VARIANTS = ["shared", "local", "closed", "latency"]

const epoch = () => performance.timeOrigin + performance.now()

/**
 * ctx: helpers of run.mjs (startNode, startSidecar, sidecarEnv, stop, listening, freePort, waitHealthy,
 * getJson, closedLoop, cpuUs, psi, log, children, benchDir, CHAT, HEADERS, stats: {pct, median, sorted, f}).
 * opts: {seconds, outage, capacity, variants, repeats, runSeconds, warmup}.
 */
export async function redisSuite(ctx, opts) {
  const redisBin = findRedis()
  if (!redisBin) return { error: "redis-server not found (Debian: apt-get install redis-server; .ci/run installs it)" }
  const out = { ...REDIS, seconds: opts.seconds, outage: opts.outage, capacity: opts.capacity, aof: Boolean(opts.aof), redisVersion: redisVersion(redisBin), runs: {} }
  for (const v of opts.variants) {
    if (!VARIANTS.includes(v)) throw new Error(`unknown redis variant ${v} (${VARIANTS.join(", ")})`)
    const load = { loadavgStart: os.loadavg()[0], psiStart: ctx.psi() }
    ctx.log(`redis: variant ${v}`)
    try {
      out.runs[v] = v === "latency" ? await latencyRun(ctx, opts, redisBin) : await clusterRun(ctx, opts, redisBin, v)
    } catch (e) {
      out.runs[v] = { error: String(e?.stack ?? e) }
      ctx.log(`redis: variant ${v} failed: ${e.message}`)
    }
    Object.assign(out.runs[v], load, { loadavgEnd: os.loadavg()[0], psiEnd: ctx.psi() })
  }
  out.budget = budget(out, ctx.stats.f)
  out.markdown = markdown(out, ctx.stats.f)
  const failed = Object.entries(out.runs).filter(([, r]) => r.error)
  if (failed.length) out.error = failed.map(([k, r]) => `${k}: ${r.error.split("\n")[0]}`).join("; ")
  return out
}

// ---------- redis-server ----------
function findRedis() {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const p = path.join(dir || ".", "redis-server")
    try { fs.accessSync(p, fs.constants.X_OK); return p } catch { /* next */ }
  }
  return null
}
const redisVersion = (bin) => {
  try { return /v=([\d.]+)/.exec(execFileSync(bin, ["--version"], { stdio: ["ignore", "pipe", "ignore"] }).toString())?.[1] ?? "?" } catch { return "?" }
}

// Never the system Redis: our own port, loopback only, its own empty working directory; no RDB/AOF
// unless `aof` (--redis-aof: an append-only file fsynced every write, kept across the restart).
function startRedis(ctx, bin, port, dir, aof = false) {
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", ...(aof ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]), "--dir", dir,
    "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning", "--logfile", ""]
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] })
  const p = { name: `redis:${port}`, proc, pid: proc.pid, out: "", exited: false, code: null }
  ctx.children.add(p)
  p.exit = new Promise((resolve) => proc.on("exit", (code, sig) => { p.exited = true; p.code = code ?? sig; ctx.children.delete(p); resolve() }))
  proc.on("error", (e) => { p.out += `spawn error: ${e.message}\n` })
  const keep = (d) => { p.out = (p.out + d.toString()).slice(-4000) }
  proc.stdout.on("data", keep)
  proc.stderr.on("data", keep)
  return p
}
const ping = (port) => new Promise((resolve) => {
  const s = net.connect(port, "127.0.0.1")
  let b = ""
  const done = (ok) => { s.destroy(); resolve(ok) }
  s.setTimeout(500, () => done(false))
  s.once("connect", () => s.write("PING\r\n"))
  s.on("data", (d) => { b += d; if (b.includes("\r\n")) done(b.startsWith("+PONG")) })
  s.once("error", () => done(false))
})
async function waitRedis(p, port, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && !p.exited) {
    if (await ping(port)) return
    await sleep(20)
  }
  throw new Error(`redis-server on :${port} not answering PING (exit ${p.code}): ${p.out.slice(-500)}`)
}
async function killRedis(p) {
  if (p.exited) return
  p.proc.kill("SIGKILL")
  await p.exit
}

// ---------- mock upstream with a rolling 60 s quota ----------
function quotaMock(quota, latencyMs) {
  const accepted = [] // accepted arrival times, oldest first
  let head = 0
  const arrivals = [] // {t, status}
  const completion = Buffer.from(JSON.stringify({
    id: "chatcmpl-mock", object: "chat.completion", created: 1700000000, model: "mock",
    choices: [{ index: 0, message: { role: "assistant", content: "pong" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 }
  }))
  const tooMany = Buffer.from(JSON.stringify({ error: { message: "Too Many Requests", type: "rate_limit", code: 429 } }))
  const server = http.createServer((req, res) => {
    req.resume()
    req.on("end", () => {
      if (req.method !== "POST" || !req.url.startsWith("/v1/chat/completions")) {
        res.writeHead(404, { "content-type": "application/json" }).end("{}")
        return
      }
      const t = epoch()
      while (head < accepted.length && accepted[head] <= t - 60_000) head++
      const ok = accepted.length - head < quota
      arrivals.push({ t, status: ok ? 200 : 429 })
      if (!ok) return void res.writeHead(429, { "content-type": "application/json", "content-length": tooMany.length }).end(tooMany)
      accepted.push(t)
      const timer = setTimeout(() => res.writeHead(200, { "content-type": "application/json", "content-length": completion.length }).end(completion), latencyMs)
      res.on("close", () => clearTimeout(timer))
    })
  })
  server.keepAliveTimeout = 60_000
  return {
    arrivals,
    listen: () => new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port))),
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()) })
  }
}

// ---------- clients: open loop, round-robin over the replicas ----------
function client(ports, body, headers) {
  const agents = ports.map(() => new http.Agent({ keepAlive: true, maxSockets: Infinity }))
  const records = []
  const send = (i, priority) => {
    const rec = { replica: i, priority, sentAt: epoch(), status: null }
    records.push(rec)
    const req = http.request({ host: "127.0.0.1", port: ports[i], path: "/v1/chat/completions", method: "POST", agent: agents[i],
      headers: { ...headers, "x-priority": priority, "content-length": Buffer.byteLength(body) } }, (res) => {
      rec.status = res.statusCode
      const qw = res.headers["x-sidecar-queue-wait-ms"]
      if (qw !== undefined) rec.queueWaitMs = Number(qw)
      if (res.headers["retry-after"] !== undefined) rec.retryAfter = res.headers["retry-after"]
      res.resume().on("end", () => { rec.latencyMs = epoch() - rec.sentAt; rec.answeredAt = epoch() })
    })
    req.setTimeout(REDIS.hungMs, () => req.destroy(new Error("hung")))
    req.on("error", (e) => { rec.error = e.message === "hung" ? "hung" : (e.code ?? e.message); rec.latencyMs ??= epoch() - rec.sentAt; rec.answeredAt ??= epoch() })
    req.end(body)
  }
  return { records, send, pending: () => records.filter((r) => r.latencyMs === undefined).length, destroy: () => agents.forEach((a) => a.destroy()) }
}

// Backend state of each replica from its /metrics (computed per scrape), else /status (cached 1 s).
const getText = (port, p) => new Promise((resolve) => {
  const req = http.get({ host: "127.0.0.1", port, path: p, agent: false, timeout: 2000 }, (res) => {
    let b = ""
    res.on("data", (d) => (b += d)).on("end", () => resolve(res.statusCode === 200 ? b : null))
  })
  req.on("error", () => resolve(null))
  req.on("timeout", () => { req.destroy(); resolve(null) })
})
async function backendState(replica) {
  const text = await getText(replica.metricsPort, "/metrics")
  if (text) {
    const m = /^sidecar_limit_backend_state\{state="([a-z_]+)"\} 1$/m.exec(text)
    const num = (name) => { const x = new RegExp(`^${name} ([\\d.e+-]+)$`, "m").exec(text); return x ? Number(x[1]) : null }
    if (m) return { state: m[1], replicas: num("sidecar_limit_replicas"), effectiveRpm: num("sidecar_effective_rate_rpm"), quotaEstimateRpm: num("sidecar_quota_estimate_rpm"), from: "metrics" }
  }
  const st = await getText(replica.port, "/status")
  try {
    const json = JSON.parse(st)
    const b = json?.limiter?.backend ?? json?.backend
    if (b?.state) return { state: b.state, replicas: b.replicas ?? null, from: "status" }
  } catch { /* no backend object (a build without the shared limit) */ }
  return { state: null, replicas: null, from: null }
}
function poller(replicas, t0) {
  const transitions = replicas.map(() => [])
  const last = replicas.map(() => undefined)
  // The leader's published rate as every replica sees it: changes of replica 0's effective rate and learned quota.
  const law = []
  let lastLaw = ""
  let running = true
  const loop = (async () => {
    while (running) {
      const at = epoch()
      const states = await Promise.all(replicas.map(backendState))
      states.forEach((s, i) => {
        if (s.state !== last[i]) { transitions[i].push({ atS: (at - t0) / 1000, state: s.state, replicas: s.replicas, from: s.from }); last[i] = s.state }
      })
      const key = `${states[0].state}|${states[0].effectiveRpm?.toFixed(1)}|${states[0].quotaEstimateRpm?.toFixed(1)}`
      if (key !== lastLaw) { law.push({ atS: Math.round(at - t0) / 1000, state: states[0].state, effectiveRpm: states[0].effectiveRpm, quotaEstimateRpm: states[0].quotaEstimateRpm }); lastLaw = key }
      await sleep(Math.max(0, REDIS.pollMs - (epoch() - at)))
    }
  })()
  return { transitions, law, stop: async () => { running = false; await loop } }
}

// ---------- the three-replica run ----------
async function clusterRun(ctx, opts, redisBin, variant) {
  const D = opts.seconds, cap = opts.capacity
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sidecar-bench-redis-"))
  const redisPort = await ctx.freePort()
  let redis = startRedis(ctx, redisBin, redisPort, dir, opts.aof)
  const mock = quotaMock(REDIS.quota, REDIS.latencyMs)
  const procs = []
  try {
    await waitRedis(redis, redisPort)
    const mockPort = await mock.listen()
    const upstream = `http://127.0.0.1:${mockPort}/v1`
    const replicas = []
    for (let i = 0; i < REDIS.replicas; i++) {
      const env = await ctx.sidecarEnv(upstream, {
        SIDECAR_RATE_RPM: String(REDIS.quota), SIDECAR_BUCKET_CAPACITY: String(cap),
        SIDECAR_REDIS_URL: `redis://127.0.0.1:${redisPort}`, SIDECAR_REDIS_FAILURE: variant === "closed" ? "closed" : "local",
        SIDECAR_QUEUE_TIMEOUT: String(REDIS.queueTimeout), SIDECAR_QUEUE_MAX: "5000"
      })
      const s = ctx.startSidecar(`sidecar-r${i}`, env)
      procs.push(s)
      replicas.push({ proc: s, port: Number(env.SIDECAR_PORT), metricsPort: Number(env.SIDECAR_METRICS_PORT) })
    }
    for (const r of replicas) await ctx.waitHealthy(r.proc, r.port)
    // Let the replicas register with each other before the load starts.
    const registered = Date.now() + 10_000
    while (Date.now() < registered) {
      const s = await Promise.all(replicas.map(backendState))
      if (s.every((x) => x.state === "shared" && x.replicas >= REDIS.replicas)) break
      if (s.every((x) => x.state === null)) break // a build without the shared limit: nothing to wait for
      await sleep(200)
    }
    const before = await Promise.all(replicas.map(backendState))
    mock.arrivals.length = 0

    const c = client(replicas.map((r) => r.port), ctx.CHAT, ctx.HEADERS)
    const t0 = epoch()
    const poll = poller(replicas, t0)
    const outage = variant === "shared" ? null : { killS: D / 2 - opts.outage / 2, restartS: D / 2 + opts.outage / 2 }
    const chaos = outage && (async () => {
      await sleep(Math.max(0, t0 + outage.killS * 1000 - epoch()))
      await killRedis(redis)
      outage.killedAtS = (epoch() - t0) / 1000
      ctx.log(`redis: SIGKILL at ${outage.killedAtS.toFixed(1)} s`)
      await sleep(Math.max(0, t0 + outage.restartS * 1000 - epoch()))
      redis = startRedis(ctx, redisBin, redisPort, dir, opts.aof)
      await waitRedis(redis, redisPort)
      outage.restartedAtS = (epoch() - t0) / 1000
      ctx.log(`redis: up again at ${outage.restartedAtS.toFixed(1)} s`)
    })()
    // Open loop on an absolute schedule: request k leaves at t0 + k / rate whatever the answers do.
    const rate = (REDIS.offered * REDIS.quota) / 60, total = Math.floor(rate * D)
    let sent = 0
    while (sent < total) {
      const due = Math.min(total, Math.floor(((epoch() - t0) / 1000) * rate) + 1)
      while (sent < due) { c.send(sent % REDIS.replicas, REDIS.mix[sent % REDIS.mix.length]); sent++ }
      await sleep(Math.max(1, t0 + (sent / rate) * 1000 - epoch()))
    }
    const t1 = epoch()
    await chaos
    const graceEnd = epoch() + REDIS.hungMs + 5000
    while (c.pending() > 0 && epoch() < graceEnd) await sleep(100)
    await poll.stop()
    const after = await Promise.all(replicas.map(async (r) => ({ ...(await backendState(r)), status: await ctx.getJson(r.port, "/status").catch(() => null) })))
    c.destroy()
    const exited = replicas.filter((r) => r.proc.exited).map((r) => `${r.proc.name} exited (${r.proc.code}): ${r.proc.out.slice(-500)}`)
    return { ...analyse({ variant, D, cap, t0, t1, outage, arrivals: mock.arrivals, records: c.records, transitions: poll.transitions, before, after, exited, stats: ctx.stats }), lawTimeline: poll.law }
  } finally {
    await Promise.all(procs.map((p) => ctx.stop(p)))
    await killRedis(redis)
    await mock.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function analyse({ variant, D, cap, t0, t1, outage, arrivals, records, transitions, before, after, exited, stats }) {
  const { pct } = stats
  const ts = arrivals.map((a) => a.t).sort((a, b) => a - b)
  // Max arrivals in any 60 s window [t, t + 60 s), over the whole run (every window start an arrival).
  const maxWindow = (from = -Infinity, to = Infinity) => {
    const xs = ts.filter((t) => t >= from && t < to)
    let best = 0, at = null
    for (let i = 0, j = 0; i < xs.length; i++) {
      while (xs[i] - xs[j] >= 60_000) j++
      if (i - j + 1 > best) { best = i - j + 1; at = (xs[j] - t0) / 1000 }
    }
    return { count: best, startS: at }
  }
  // Phases (s from t0): the first minute is warm-up (the shared bucket's burst, the law's first 429s);
  // shorter runs (smoke checks) count only their first third, or up to the kill, as warm-up.
  const warm = Math.min(60, outage ? outage.killS : D / 3)
  const phases = outage
    ? [[warm === 60 ? "first minute" : "warm-up", 0, warm], ["steady, before the outage", warm, outage.killedAtS ?? outage.killS],
      [`Redis down (${Math.round((outage.restartedAtS ?? outage.restartS) - (outage.killedAtS ?? outage.killS))} s)`, outage.killedAtS ?? outage.killS, outage.restartedAtS ?? outage.restartS],
      ["after the restart", outage.restartedAtS ?? outage.restartS, Infinity]]
    : [[warm === 60 ? "first minute" : "warm-up", 0, warm], ["steady", warm, Infinity]]
  const inPhase = (t, a, b) => (t - t0) / 1000 >= a && (t - t0) / 1000 < b
  const phaseRows = phases.map(([name, a, b]) => {
    const xs = arrivals.filter((x) => inPhase(x.t, a, b))
    const rs = records.filter((r) => inPhase(r.sentAt, a, b))
    const secs = Math.min(b, (Math.max(t1, ts.at(-1) ?? t1) - t0) / 1000) - a
    return {
      phase: name, fromS: a, toS: Number.isFinite(b) ? b : null, arrivals: xs.length, upstream200: xs.filter((x) => x.status === 200).length,
      upstream429: xs.filter((x) => x.status === 429).length, arrivalsPerMin: secs > 0 ? (xs.length / secs) * 60 : null,
      clientStatuses: countBy(rs, statusKey)
    }
  })
  const steadyFrom = warm
  const steady429 = arrivals.filter((x) => x.status === 429 && (x.t - t0) / 1000 >= steadyFrom).length
  const byPriority = ["urgent", "high", "normal", "low"].map((priority) => {
    const rs = records.filter((r) => r.priority === priority)
    const ok = rs.filter((r) => r.status >= 200 && r.status < 300)
    return {
      priority, sent: rs.length, ok: ok.length, statuses: countBy(rs, statusKey),
      waitP50: pct(ok.map((r) => r.queueWaitMs), 50), waitP95: pct(ok.map((r) => r.queueWaitMs), 95)
    }
  })
  const okAll = records.filter((r) => r.status >= 200 && r.status < 300)
  const r503 = records.filter((r) => r.status === 503)
  const hung = records.filter((r) => r.error === "hung" || r.latencyMs === undefined).length
  // Switch times of each replica, relative to the kill and to the restart.
  let switching = null
  if (outage) {
    const killedAt = outage.killedAtS ?? outage.killS, restartedAt = outage.restartedAtS ?? outage.restartS
    switching = transitions.map((tr) => {
      const away = tr.find((x) => x.atS >= killedAt && x.state && x.state !== "shared")
      const back = tr.find((x) => x.atS >= restartedAt && x.state === "shared")
      return { awayState: away?.state ?? null, awayAfterS: away ? away.atS - killedAt : null, backAfterS: back ? back.atS - restartedAt : null }
    })
  }
  return {
    variant, seconds: D, capacity: cap, allowedWindow: REDIS.quota + cap, outage,
    upstream: { arrivals: arrivals.length, ok: arrivals.filter((x) => x.status === 200).length, r429: arrivals.filter((x) => x.status === 429).length, steady429, steadyFromS: steadyFrom },
    window: maxWindow(), windowAfterWarmup: maxWindow(t0 + warm * 1000),
    phases: phaseRows,
    clients: {
      sent: records.length, statuses: countBy(records, statusKey), hung,
      admissionP50: pct(okAll.map((r) => r.queueWaitMs), 50), admissionP95: pct(okAll.map((r) => r.queueWaitMs), 95),
      latencyP50: pct(okAll.map((r) => r.latencyMs), 50), latencyP95: pct(okAll.map((r) => r.latencyMs), 95),
      r503: r503.length, r503LatencyMax: r503.length ? Math.max(...r503.map((r) => r.latencyMs ?? Infinity)) : null,
      r503WithoutRetryAfter: r503.filter((r) => r.retryAfter === undefined).length,
      r503SentS: r503.length ? [Math.min(...r503.map((r) => (r.sentAt - t0) / 1000)), Math.max(...r503.map((r) => (r.sentAt - t0) / 1000))] : null,
      r503AnsweredS: r503.length ? [Math.min(...r503.map((r) => (r.answeredAt - t0) / 1000)), Math.max(...r503.map((r) => (r.answeredAt - t0) / 1000))] : null,
      // 503s answered before the kill or after every replica was back to shared + 1 s: none expected.
      r503Outside: outage && r503.length ? r503.filter((r) => (r.answeredAt - t0) / 1000 < (outage.killedAtS ?? outage.killS) || (r.answeredAt - t0) / 1000 > (outage.restartedAtS ?? outage.restartS) + (recoveryOf(transitions, outage) ?? 0) + 1).length : 0,
      latencyMax: Math.max(0, ...records.map((r) => r.latencyMs ?? 0))
    },
    byPriority, transitions, switching,
    recoveryS: outage ? recoveryOf(transitions, outage) : null,
    // Switches away from shared while Redis was up (a command slower than the timeout on a loaded machine).
    spuriousSwitches: transitions.flat().filter((x) => x.atS > 0.5 && x.state !== "shared" &&
      !(outage && x.atS >= (outage.killedAtS ?? outage.killS) && x.atS < (outage.restartedAtS ?? outage.restartS) + 1)).length,
    backendBefore: before, backendAfter: after.map(({ status, ...b }) => ({ ...b, statusBackend: status?.limiter?.backend ?? status?.backend ?? null })),
    // Each replica's rate law at the end: the learned quota shows whether an outage taught it a wrong one.
    lawAfter: after.map(({ status }) => status && { state: status.control?.state, quotaEstimateRpm: status.control?.quota_estimate_rpm, effectiveRpm: status.retreat?.effective_rpm }),
    exited,
    arrivalsS: arrivals.map((a) => [Math.round(a.t - t0) / 1000, a.status])
  }
}
// Slowest replica's time from Redis answering again to `shared`, s (null when one never came back).
function recoveryOf(transitions, outage) {
  const restartedAt = outage.restartedAtS ?? outage.restartS
  const backs = transitions.map((tr) => tr.find((x) => x.atS >= restartedAt && x.state === "shared"))
  return backs.every(Boolean) ? Math.max(...backs.map((b) => b.atS - restartedAt)) : null
}
const statusKey = (r) => String(r.status ?? r.error ?? "unanswered")
const countBy = (xs, key) => { const o = {}; for (const x of xs) { const k = key(x); o[k] = (o[k] ?? 0) + 1 } return o }

// ---------- added latency per admission ----------
// One redis-server, a 0 ms mock, two sidecars with the same settings but SIDECAR_REDIS_URL on one of
// them; a limit far above the load (SIDECAR_RATE_RPM = capacity = 600,000) so nobody waits; c = 1
// closed loop, N repeats × S s, order rotated every repeat; added = p50(redis) − p50(single) per repeat.
async function latencyRun(ctx, opts, redisBin) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sidecar-bench-redis-"))
  const redisPort = await ctx.freePort()
  const redis = startRedis(ctx, redisBin, redisPort, dir)
  const mock = ctx.startNode("mock", path.join(ctx.benchDir, "mock-upstream.mjs"), ["0"], {})
  const procs = [mock]
  try {
    await waitRedis(redis, redisPort)
    const upstream = `http://127.0.0.1:${await ctx.listening(mock)}/v1`
    const common = { SIDECAR_RATE_RPM: "600000", SIDECAR_BUCKET_CAPACITY: "600000", SIDECAR_MAX_INFLIGHT: "1024" }
    const targets = {}
    for (const [name, extra] of [["single", {}], ["redis", { SIDECAR_REDIS_URL: `redis://127.0.0.1:${redisPort}` }]]) {
      const env = await ctx.sidecarEnv(upstream, { ...common, ...extra })
      const s = ctx.startSidecar(`sidecar-${name}`, env)
      procs.push(s)
      await ctx.waitHealthy(s, Number(env.SIDECAR_PORT))
      targets[name] = { proc: s, port: Number(env.SIDECAR_PORT), metricsPort: Number(env.SIDECAR_METRICS_PORT), url: `http://127.0.0.1:${env.SIDECAR_PORT}/v1/chat/completions` }
    }
    const backend = await backendState(targets.redis)
    const runs = []
    for (let r = 0; r < opts.repeats; r++) {
      const order = r % 2 ? ["redis", "single"] : ["single", "redis"]
      const row = { repeat: r }
      for (const name of order) {
        const t = targets[name]
        await ctx.closedLoop(t.url, 1, opts.warmup)
        const cpu0 = ctx.cpuUs(t.proc.pid), redisCpu0 = ctx.cpuUs(redis.pid)
        const res = await ctx.closedLoop(t.url, 1, opts.runSeconds)
        const cpu = ctx.cpuUs(t.proc.pid) - cpu0, redisCpu = ctx.cpuUs(redis.pid) - redisCpu0
        row[name] = { ...res, cpuUsPerReq: res.requests ? cpu / res.requests : null, redisCpuUsPerReq: res.requests ? redisCpu / res.requests : null }
      }
      row.addedP50 = row.redis.p50 != null && row.single.p50 != null ? row.redis.p50 - row.single.p50 : null
      runs.push(row)
      ctx.log(`redis latency: repeat ${r + 1}/${opts.repeats}: p50 single ${row.single.p50?.toFixed(3)} ms, redis ${row.redis.p50?.toFixed(3)} ms`)
    }
    const { median } = ctx.stats
    const col = (name, k) => median(runs.map((x) => x[name][k]))
    return {
      variant: "latency", repeats: opts.repeats, runSeconds: opts.runSeconds, backend, runs,
      single: { p50: col("single", "p50"), p99: col("single", "p99"), rps: col("single", "rps"), cpuUsPerReq: col("single", "cpuUsPerReq"), errors: runs.reduce((a, x) => a + x.single.non2xx + x.single.errors, 0) },
      redis: { p50: col("redis", "p50"), p99: col("redis", "p99"), rps: col("redis", "rps"), cpuUsPerReq: col("redis", "cpuUsPerReq"), redisCpuUsPerReq: col("redis", "redisCpuUsPerReq"), errors: runs.reduce((a, x) => a + x.redis.non2xx + x.redis.errors, 0) },
      addedP50: median(runs.map((x) => x.addedP50)), addedP50Range: [Math.min(...runs.map((x) => x.addedP50)), Math.max(...runs.map((x) => x.addedP50))]
    }
  } finally {
    await Promise.all(procs.map((p) => ctx.stop(p)))
    await killRedis(redis)
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// ---------- report ----------
function budget(out, f) {
  const rows = []
  const add = (check, budgetText, value, ok, unit = "") => value != null && Number.isFinite(value) && rows.push({ check, budget: budgetText, measured: `${f(value, unit === " ms" ? 2 : unit === " s" ? 1 : 0)}${unit}`, ok })
  for (const v of ["shared", "local", "closed"]) {
    const r = out.runs[v]
    if (!r || r.error) continue
    add(`redis ${v}: max upstream arrivals in any 60 s window`, `<= ${r.allowedWindow} (limit + burst)`, r.window.count, r.window.count <= r.allowedWindow)
    add(`redis ${v}: upstream 429s after the first ${r.upstream.steadyFromS} s`, "0", r.upstream.steady429, r.upstream.steady429 === 0)
    add(`redis ${v}: requests unanswered after ${REDIS.hungMs / 1000} s`, "0", r.clients.hung, r.clients.hung === 0)
    if (r.outage) add(`redis ${v}: back to shared after the restart (slowest replica)`, "<= 5 s", r.recoveryS ?? Infinity, r.recoveryS != null && r.recoveryS <= 5, " s")
    if (v === "closed") add("redis closed: 503s answered while Redis was up", "0", r.clients.r503Outside, r.clients.r503Outside === 0)
  }
  const l = out.runs.latency
  if (l && !l.error) add("redis: p50 added per admission (c=1, vs single-process)", "<= 1 ms", l.addedP50, l.addedP50 <= 1, " ms")
  return rows
}

function markdown(out, f) {
  const L = ["", `## redis (shared limit, issue 11: ${REDIS.replicas} sidecars, one redis-server ${out.redisVersion}; mock quota ${REDIS.quota} per rolling 60 s, 429 without Retry-After, ${REDIS.latencyMs} ms answers; ` +
    `SIDECAR_RATE_RPM=${REDIS.quota}, capacity ${out.capacity}, queue timeout ${REDIS.queueTimeout} s; Redis ${out.aof ? "with an append-only file (fsync always)" : "without persistence"}; ${REDIS.offered}× the quota offered for ${out.seconds} s, round-robin, priorities mixed u1:h2:n4:l3)`]
  const lines = (s) => Object.entries(s).sort().map(([k, v]) => `${k}:${v}`).join(" ")
  for (const v of ["shared", "local", "closed"]) {
    const r = out.runs[v]
    if (!r) continue
    L.push("", `### ${v}${v === "shared" ? " (Redis up throughout)" : ` (SIDECAR_REDIS_FAILURE=${v}; Redis SIGKILLed ${out.outage} s in the middle, restarted on the same port)`} — load avg ${f(r.loadavgStart, 2)} → ${f(r.loadavgEnd, 2)}, CPU PSI avg10 ${r.psiStart ?? "–"} → ${r.psiEnd ?? "–"}`, "")
    if (r.error) { L.push(`not run: ${r.error.split("\n")[0]}`); continue }
    if (r.exited.length) L.push(`**replica exited:** ${r.exited.join("; ")}`, "")
    const be = r.backendBefore.map((b) => b.state ?? "–").join(", ")
    L.push(`- backend before the load: ${be}${r.backendBefore[0]?.state == null ? " (**this build has no shared limit: every replica limits alone**)" : ` (replicas seen: ${r.backendBefore.map((b) => b.replicas ?? "–").join(", ")})`}`,
      `- upstream: ${r.upstream.arrivals} arrivals, ${r.upstream.ok} 200, ${r.upstream.r429} 429 (**${r.upstream.steady429} after the first ${r.upstream.steadyFromS} s**); max in any 60 s window **${r.window.count}** (from ${f(r.window.startS, 1)} s; limit + burst = ${r.allowedWindow}); counting only arrivals after the first ${r.upstream.steadyFromS} s: ${r.windowAfterWarmup.count}`,
      `- switches away from shared while Redis was up (all replicas): ${r.spuriousSwitches}; rate law at the end (state, learned quota, effective RPM): ${r.lawAfter.map((x) => (x ? `${x.state} ${f(x.quotaEstimateRpm, 1)} ${f(x.effectiveRpm, 1)}` : "–")).join("; ")}`,
      `- clients: ${r.clients.sent} sent; ${lines(r.clients.statuses)}; unanswered after ${REDIS.hungMs / 1000} s: ${r.clients.hung}; admission (x-sidecar-queue-wait-ms of 2xx) p50 ${f(r.clients.admissionP50, 0)} ms, p95 ${f(r.clients.admissionP95, 0)} ms; latency of 2xx p50 ${f(r.clients.latencyP50, 0)} / p95 ${f(r.clients.latencyP95, 0)} ms; slowest answer ${f(r.clients.latencyMax / 1000, 1)} s`)
    if (r.outage) {
      L.push(`- Redis killed at ${f(r.outage.killedAtS, 1)} s, up again at ${f(r.outage.restartedAtS, 1)} s; per replica, switch away (state, s after the kill) / back to shared (s after the restart): ` +
        r.switching.map((s, i) => `r${i} ${s.awayState ?? "–"} ${f(s.awayAfterS, 1)} / ${f(s.backAfterS, 1)}`).join("; ") + ` → **recovery ${f(r.recoveryS, 1)} s** (state polled every ${REDIS.pollMs} ms)`)
      if (r.clients.r503) L.push(`- 503s: ${r.clients.r503}, sent between ${f(r.clients.r503SentS[0], 1)} and ${f(r.clients.r503SentS[1], 1)} s (requests queued before the kill included), answered between ${f(r.clients.r503AnsweredS[0], 1)} and ${f(r.clients.r503AnsweredS[1], 1)} s; answered outside the outage (+ recovery + 1 s): ${r.clients.r503Outside}; slowest ${f(r.clients.r503LatencyMax, 0)} ms; without Retry-After: ${r.clients.r503WithoutRetryAfter}`)
    }
    if (r.lawTimeline?.length > 1) {
      const tl = r.lawTimeline.filter((x) => x.effectiveRpm != null)
      L.push(`- replica r0's effective rate over time (s: RPM, learned quota): ${tl.slice(0, 14).map((x) => `${f(x.atS, 1)}: ${f(x.effectiveRpm, 1)}${x.quotaEstimateRpm ? ` (q ${f(x.quotaEstimateRpm, 1)})` : ""}${x.state === "shared" ? "" : ` ${x.state}`}`).join(", ")}${tl.length > 14 ? ` … (${tl.length} changes)` : ""}`)
    }
    L.push("", "| phase (s from start) | upstream arrivals | /min | 200 | 429 | client statuses of requests sent then |", "|---|---|---|---|---|---|")
    for (const p of r.phases) L.push(`| ${p.phase} (${f(p.fromS, 0)}–${p.toS == null ? "end" : f(p.toS, 0)}) | ${p.arrivals} | ${f(p.arrivalsPerMin, 1)} | ${p.upstream200} | ${p.upstream429} | ${lines(p.clientStatuses)} |`)
    L.push("", "| priority | sent | 2xx | statuses | admission p50 ms | p95 ms |", "|---|---|---|---|---|---|")
    for (const p of r.byPriority) L.push(`| ${p.priority} | ${p.sent} | ${p.ok} | ${lines(p.statuses)} | ${f(p.waitP50, 0)} | ${f(p.waitP95, 0)} |`)
  }
  const l = out.runs.latency
  if (l) {
    L.push("", `### added latency per admission (c=1 closed loop, 0 ms mock, limit far above the load; ${l.repeats ?? "?"} × ${l.runSeconds ?? "?"} s, order alternated; medians over repeats) — load avg ${f(l.loadavgStart, 2)} → ${f(l.loadavgEnd, 2)}`, "")
    if (l.error) L.push(`not run: ${l.error.split("\n")[0]}`)
    else {
      L.push("| sidecar | p50 ms | p99 ms | req/s | sidecar CPU µs/req | redis-server CPU µs/req | errors |", "|---|---|---|---|---|---|---|",
        `| single-process | ${f(l.single.p50, 3)} | ${f(l.single.p99, 2)} | ${f(l.single.rps, 0)} | ${f(l.single.cpuUsPerReq, 0)} | – | ${l.single.errors} |`,
        `| SIDECAR_REDIS_URL (backend ${l.backend.state ?? "– (not in this build)"}) | ${f(l.redis.p50, 3)} | ${f(l.redis.p99, 2)} | ${f(l.redis.rps, 0)} | ${f(l.redis.cpuUsPerReq, 0)} | ${f(l.redis.redisCpuUsPerReq, 0)} | ${l.redis.errors} |`,
        "", `p50 added per admission: **${f(l.addedP50, 3)} ms** (per repeat ${f(l.addedP50Range[0], 3)}..${f(l.addedP50Range[1], 3)} ms)`)
    }
  }
  return L.join("\n")
}
