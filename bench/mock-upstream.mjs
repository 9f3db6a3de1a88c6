// OpenAI-ish mock upstream for the benchmarks.
// Usage: node bench/mock-upstream.mjs [port]   (or MOCK_PORT; 0 = any free port)
// Env: MOCK_LATENCY_MS (0), MOCK_CHUNKS (20), MOCK_CHUNK_MS (5), MOCK_MAX_TIMESTAMPS (1000000)
import http from "node:http"
import { performance } from "node:perf_hooks"

const port = Number(process.argv[2] ?? process.env.MOCK_PORT ?? 0)
const latencyMs = Number(process.env.MOCK_LATENCY_MS ?? 0)
const chunks = Number(process.env.MOCK_CHUNKS ?? 20)
const chunkMs = Number(process.env.MOCK_CHUNK_MS ?? 5)
const maxTimestamps = Number(process.env.MOCK_MAX_TIMESTAMPS ?? 1_000_000)

// Epoch ms with sub-ms resolution, comparable with the runner's clock (another process).
const now = () => performance.timeOrigin + performance.now()
// sequence: one letter per recorded arrival (u/h/n/l, "-" without X-Priority), aligned with timestamps.
const fresh = () => ({ count: 0, timestamps: [], sequence: "", priorities: {} })
let stats = fresh()

const completion = Buffer.from(JSON.stringify({
  id: "chatcmpl-mock", object: "chat.completion", created: 1700000000, model: "mock",
  choices: [{ index: 0, message: { role: "assistant", content: "pong" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 }
}))
const models = Buffer.from(JSON.stringify({
  object: "list",
  data: ["meta/llama-3.1-8b-instruct", "deepseek-ai/deepseek-v4-pro"].map((id) => ({ id, object: "model", owned_by: "mock" }))
}))
const chunkLine = (i) => `data: ${JSON.stringify({
  id: "chatcmpl-mock", object: "chat.completion.chunk", created: 1700000000, model: "mock",
  choices: [{ index: 0, delta: { content: `tok${i} ` }, finish_reason: null }]
})}\n\n`

const sendJson = (res, status, buf) =>
  res.writeHead(status, { "content-type": "application/json", "content-length": buf.length }).end(buf)

const stream = (req, res) => {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
  res.flushHeaders()
  let i = 0
  const timer = setInterval(() => {
    if (i < chunks) return void res.write(chunkLine(i++))
    clearInterval(timer)
    res.end("data: [DONE]\n\n")
  }, chunkMs)
  res.on("close", () => clearInterval(timer))
}

const chat = (req, res, body) => {
  const t = now()
  const p = String(req.headers["x-priority"] ?? "none").toLowerCase()
  stats.count++
  stats.priorities[p] = (stats.priorities[p] ?? 0) + 1
  if (stats.timestamps.length < maxTimestamps) {
    stats.timestamps.push(t)
    stats.sequence += p === "none" ? "-" : p[0]
  }
  const isStream = /"stream"\s*:\s*true/.test(body)
  const answer = () => (res.destroyed ? undefined : isStream ? stream(req, res) : sendJson(res, 200, completion))
  if (latencyMs > 0) {
    const timer = setTimeout(answer, latencyMs)
    res.on("close", () => clearTimeout(timer))
  } else answer()
}

const server = http.createServer((req, res) => {
  const chunksIn = []
  req.on("data", (c) => chunksIn.push(c))
  req.on("end", () => {
    const path = req.url.split("?")[0]
    if (req.method === "POST" && path === "/v1/chat/completions") return chat(req, res, Buffer.concat(chunksIn).toString())
    if (req.method === "GET" && path.startsWith("/v1/models")) return sendJson(res, 200, models)
    if (path === "/__stats") {
      const out = Buffer.from(JSON.stringify(stats))
      if (req.url.includes("reset=1")) stats = fresh()
      return sendJson(res, 200, out)
    }
    sendJson(res, 404, Buffer.from(JSON.stringify({ error: { message: "not found", type: "mock", code: "not_found" } })))
  })
})
server.keepAliveTimeout = 60_000
server.listen(port, "127.0.0.1", () => console.log(`LISTENING ${server.address().port}`))
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0))
