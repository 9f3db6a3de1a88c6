// Load generator run by run.mjs as its own process, so it never shares an event loop with a target.
// Usage: node bench/loadgen.mjs '<json options>'  -> prints one JSON result on stdout.
//   mode "closed":  {url, concurrency, seconds, body, headers}        closed loop (fallback when wrk is missing)
//   mode "streams": {url, n, warmup, singles, body, headers, timeoutMs, cpuPid}  SSE streams
//   mode "open":    {url, rate, seconds, backlog, mix, body, headers, graceMs, timeoutMs}  open loop
//   mode "hold":    IPC-driven (run.mjs forks it): holds many requests open, one socket each, and aborts them on command
//   mode "probe":   IPC-driven: GET {url} every {intervalMs} over one keep-alive connection, latencies back on "stop"
import fs from "node:fs"
import http from "node:http"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { performance } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"
import { Agent, Pool } from "undici"

const opts = JSON.parse(process.argv[2] ?? "{}")
const epoch = () => performance.timeOrigin + performance.now()
const clkTck = Number(process.env.CLK_TCK ?? 100)
const cpuUs = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ").at(-1).split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / clkTck
}
const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : null)

async function closed({ url, concurrency, seconds, body, headers }) {
  const u = new URL(url)
  const pool = new Pool(u.origin, { connections: concurrency, keepAliveTimeout: 60_000, headersTimeout: 10_000, bodyTimeout: 10_000 })
  const lat = []
  let non2xx = 0, errors = 0
  const t0 = performance.now(), end = t0 + seconds * 1000
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now()
      try {
        const r = await pool.request({ path: u.pathname + u.search, method: "POST", headers, body })
        await r.body.dump()
        if (r.statusCode >= 400) non2xx++
        lat.push(performance.now() - t)
      } catch {
        errors++
        await sleep(10) // a refused/reset target must not turn this into a hot loop
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsed = (performance.now() - t0) / 1000
  await pool.destroy()
  lat.sort((a, b) => a - b)
  return { requests: lat.length, seconds: elapsed, rps: lat.length / elapsed, p50: pct(lat, 50), p99: pct(lat, 99), non2xx, errors }
}

// Warm-up streams (concurrent), then `singles` sequential single streams, then n concurrent streams;
// cpuPid's utime+stime is read around the concurrent phase only.
async function streams({ url, n, warmup = 0, singles = 0, body, headers, timeoutMs = 30_000, cpuPid }) {
  const u = new URL(url)
  const agent = new Agent({ keepAliveTimeout: 60_000 })
  const one = async () => {
    const t0 = performance.now()
    const r = await agent.request({
      origin: u.origin, path: u.pathname, method: "POST", headers, body, signal: AbortSignal.timeout(timeoutMs)
    })
    const firstByte = performance.now() - t0
    let firstEvent = null, last = t0, maxGap = 0, text = ""
    for await (const chunk of r.body) {
      const t = performance.now()
      if (firstEvent === null) firstEvent = t - t0
      else maxGap = Math.max(maxGap, t - last)
      last = t
      text += chunk.toString()
    }
    const events = text.split("data:").length - 1
    return { status: r.statusCode, firstByte, firstEvent, total: last - t0, maxGap, events, done: text.includes("[DONE]") }
  }
  const many = async (k) => {
    const settled = await Promise.allSettled(Array.from({ length: k }, one))
    return {
      ok: settled.filter((s) => s.status === "fulfilled").map((s) => s.value),
      errors: settled.filter((s) => s.status === "rejected").map((s) => String(s.reason?.code ?? s.reason))
    }
  }
  if (warmup) await many(warmup)
  const single = []
  for (let i = 0; i < singles; i++) single.push(...(await many(1)).ok)
  const cpu0 = cpuPid ? cpuUs(cpuPid) : 0
  const conc = n ? await many(n) : { ok: [], errors: [] }
  const cpu = cpuPid ? cpuUs(cpuPid) - cpu0 : null
  await agent.destroy()
  return { singles: single, streams: conc.ok, errors: conc.errors, cpuUs: cpu }
}

async function open({ url, rate, seconds, backlog = 0, mix = ["normal"], body, headers, graceMs = 3000, timeoutMs = 600_000 }) {
  const u = new URL(url)
  const agent = new Agent({ keepAliveTimeout: 60_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs })
  const ac = new AbortController()
  const records = []
  let pending = 0
  const send = (priority) => {
    const rec = { priority, sentAt: epoch() }
    const t = performance.now()
    records.push(rec)
    pending++
    agent.request({ origin: u.origin, path: u.pathname, method: "POST", headers: { ...headers, "x-priority": priority }, body, signal: ac.signal })
      .then(async (r) => {
        rec.status = r.statusCode
        const qw = r.headers["x-sidecar-queue-wait-ms"]
        if (qw !== undefined) rec.queueWaitMs = Number(qw)
        await r.body.dump()
        rec.latencyMs = performance.now() - t
      })
      .catch((e) => { rec.error = e.code ?? e.name })
      .finally(() => pending--)
  }
  const t0 = epoch()
  for (let i = 0; i < backlog; i++) send("low")
  // Open loop on an absolute schedule: request k leaves at t0 + k/rate whatever the answers do.
  let sent = 0
  const total = Math.floor(rate * seconds)
  while (sent < total) {
    const due = Math.min(total, Math.floor(((epoch() - t0) / 1000) * rate) + 1)
    while (sent < due) send(mix[sent++ % mix.length])
    await sleep(Math.max(1, t0 + (sent / rate) * 1000 - epoch()))
  }
  const graceEnd = t0 + seconds * 1000 + graceMs
  while (pending > 0 && epoch() < graceEnd) await sleep(50)
  ac.abort()
  await agent.destroy().catch(() => {})
  return { t0, t1: t0 + seconds * 1000, records }
}

// Holds requests open: `{cmd:"open", n, batch}` opens n more (each its own socket: keep-alive agent
// without a socket limit, so no request waits for another's socket), `{cmd:"abort", n}` destroys n
// of the open ones at once, oldest first (`newest: true`: the newest) (their sockets close; the server sees the client leave), `{cmd:"abort"}`
// all of them, `{cmd:"stats"}` reports. Every command is answered with one message.
function hold({ url, body, headers }) {
  const u = new URL(url)
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 16 })
  const open = new Set()
  const statuses = {}, errors = {}
  let opened = 0, answered = 0, aborted = 0
  const one = () => new Promise((resolve) => {
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: "POST", agent, headers: { ...headers, "content-length": Buffer.byteLength(body) } })
    open.add(req)
    opened++
    req.on("response", (res) => {
      answered++
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
      open.delete(req)
      res.resume()
    })
    req.on("error", (e) => {
      open.delete(req)
      if (!req.benchAborted) errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1
      resolve()
    })
    req.on("finish", resolve) // the whole request is written to the socket
    req.end(body)
  })
  const handlers = {
    open: async ({ n, batch = 250 }) => {
      const t0 = performance.now()
      for (let i = 0; i < n; i += batch) await Promise.all(Array.from({ length: Math.min(batch, n - i) }, one))
      return { openMs: performance.now() - t0 }
    },
    abort: ({ n, newest = false }) => { // oldest first (the server's queue head), or the newest
      const all = [...open]
      const victims = newest ? all.slice(-(n ?? all.length)) : all.slice(0, n ?? all.length)
      const at = epoch()
      for (const req of victims) { req.benchAborted = true; open.delete(req); req.destroy() }
      aborted += victims.length
      return { at, left: victims.length }
    },
    stats: () => ({})
  }
  process.on("message", async (m) => {
    const out = await handlers[m.cmd](m)
    process.send({ ...out, open: open.size, opened, answered, aborted, statuses, errors })
  })
  process.on("disconnect", () => process.exit(0))
  return new Promise(() => {})
}

// GET url every intervalMs, one request at a time over one keep-alive connection, until {cmd:"stop"}.
// A response later than the next tick skips the missed ticks (run.mjs corrects for them). Sends back
// samples [send epoch ms, latency ms] and this process's own event-loop delay (to show the probe was not the bottleneck).
function probe({ url, intervalMs = 5 }) {
  const u = new URL(url)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const samples = []
  const errors = []
  let running = true
  const loopDelay = monitorEventLoopDelay({ resolution: 1 })
  loopDelay.enable()
  const get = () => new Promise((resolve) => {
    const req = http.get({ host: u.hostname, port: u.port, path: u.pathname, agent, timeout: 60_000 }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)) })
    req.on("error", (e) => resolve(e.code ?? "error"))
    req.on("timeout", () => req.destroy())
  })
  const loop = async () => {
    const t0 = performance.now()
    let k = 0
    while (running) {
      const wait = t0 + k * intervalMs - performance.now()
      if (wait > 0) await sleep(wait)
      const s = performance.now()
      const status = await get()
      const e = performance.now()
      samples.push([performance.timeOrigin + s, e - s])
      if (status !== 200) errors.push(status)
      k = Math.max(k + 1, Math.ceil((e - t0) / intervalMs))
    }
  }
  const done = loop()
  process.on("message", async (m) => {
    if (m.cmd !== "stop") return
    running = false
    await done
    loopDelay.disable()
    process.send({ samples, errors: errors.slice(0, 20), errorCount: errors.length, probeLoopDelayP99Ms: loopDelay.percentile(99) / 1e6, probeLoopDelayMaxMs: loopDelay.max / 1e6 })
    agent.destroy()
  })
  process.on("disconnect", () => process.exit(0))
  process.send({ started: true })
  return new Promise(() => {})
}

const modes = { closed, streams, open, hold, probe }
const run = modes[opts.mode]
if (!run) {
  console.error(`unknown mode ${opts.mode}`)
  process.exit(2)
}
process.stdout.write(JSON.stringify(await run(opts)) + "\n")
process.exit(0)
