// Minimal node:http + undici proxy: the "raw" reference of effect-notes Q2 (b).
// Usage: UPSTREAM=http://127.0.0.1:PORT/v1 node bench/baseline-proxy.mjs [port]   (or BASELINE_PORT)
import http from "node:http"
import { pipeline } from "node:stream"
import { Agent } from "undici"

const upstream = new URL(process.env.UPSTREAM ?? "http://127.0.0.1:8000/v1")
const port = Number(process.argv[2] ?? process.env.BASELINE_PORT ?? 0)
const basePath = upstream.pathname.replace(/\/+$/, "")
const agent = new Agent({ keepAliveTimeout: 30_000 })

const HOP = new Set([
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
  "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect"
])
const filter = (headers, keepLength = false) => {
  const named = String(headers.connection ?? "").toLowerCase().split(",").map((s) => s.trim())
  const out = {}
  for (const [k, v] of Object.entries(headers)) {
    if ((HOP.has(k) && !(keepLength && k === "content-length")) || named.includes(k)) continue
    out[k] = v
  }
  return out
}
// Base ".../v1" + "/v1/chat/completions" must not become "/v1/v1/...".
const joinPath = (url) => (basePath && (url === basePath || url.startsWith(basePath + "/") || url.startsWith(basePath + "?")) ? url : basePath + url)

const server = http.createServer((req, res) => {
  const body = []
  req.on("data", (c) => body.push(c))
  req.on("end", async () => {
    const ac = new AbortController()
    res.on("close", () => { if (!res.writableFinished) ac.abort() })
    try {
      const up = await agent.request({
        origin: upstream.origin, path: joinPath(req.url), method: req.method, headers: filter(req.headers),
        body: req.method === "GET" || req.method === "HEAD" ? null : Buffer.concat(body),
        signal: ac.signal, headersTimeout: 0, bodyTimeout: 0
      })
      res.writeHead(up.statusCode, filter(up.headers, true))
      pipeline(up.body, res, () => {})
    } catch (err) {
      if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: { message: `bad gateway: ${err.code ?? err.name}`, type: "proxy_error", code: "bad_gateway" } }))
    }
  })
})
server.keepAliveTimeout = 60_000
server.listen(port, "127.0.0.1", () => console.log(`LISTENING ${server.address().port}`))
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0))
