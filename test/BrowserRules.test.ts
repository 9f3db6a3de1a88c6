// What a web page can make the sidecar do: a black-box view over real sockets.
import { Option } from "effect"
import { connect } from "node:net"
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"

let upstream: MockUpstream
let sidecar: RunningSidecar
let port: number

beforeAll(async () => {
  upstream = await MockUpstream.start()
  upstream.handler = (_req, res) => json(res, 200, { ok: true })
  sidecar = await startSidecar({ upstream: upstream.url, corsOrigins: ["https://app.example.com"], allowedHosts: ["sidecar.internal"] })
  port = Number(new URL(sidecar.url).port)
})
afterAll(async () => {
  await sidecar.close()
  await upstream.close()
})

/** One raw HTTP/1.1 exchange, so Host and Origin are exactly what a browser (or an attacker's page) sends. */
const exchange = (head: string, body = "") =>
  new Promise<{ status: number; headers: string; body: string }>((resolve, reject) => {
    // Written, not ended: a client that hangs up before its answer is a client gone.
    const socket = connect(port, "127.0.0.1", () => socket.write(`${head}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`))
    let out = ""
    socket.on("data", (d) => (out += d.toString()))
    socket.on("end", () => {
      const [headers = "", rest = ""] = out.split("\r\n\r\n", 2)
      resolve({ status: Number(headers.split(" ")[1]), headers: headers.toLowerCase(), body: rest })
    })
    socket.on("error", reject)
  })

const chat = '{"model":"nvidia/x","messages":[]}'

describe("browser rules", () => {
  it("refuses a cross-site text/plain POST that would spend the key, before any upstream call", async () => {
    const before = upstream.received.length
    const plain = await exchange(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: https://evil.example\r\nContent-Type: text/plain`, chat)
    expect(plain.status).toBe(403)
    expect(plain.body).toContain("origin_not_allowed")
    // Same origin but not JSON: a form post of the sidecar's own page would be refused too.
    const form = await exchange(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: text/plain`, chat)
    expect(form.status).toBe(415)
    expect(upstream.received.length).toBe(before)
  })

  it("refuses a Host that is not loopback or allowed (DNS rebinding), admin writes included", async () => {
    const rebound = await exchange(`POST /api/admin/config HTTP/1.1\r\nHost: attacker.example:${port}\r\nOrigin: http://attacker.example:${port}\r\nContent-Type: application/json`, '{"rate_rpm":1000}')
    expect(rebound.status).toBe(403)
    expect(rebound.body).toContain("host_not_allowed")
    const admin = await request(`${sidecar.url}/api/admin/config`)
    expect(((await admin.body.json()) as { rate_rpm: number }).rate_rpm).toBe(40)
    // Names the operator allowed, and loopback names, pass.
    expect((await exchange(`GET /health HTTP/1.1\r\nHost: sidecar.internal:${port}`)).status).toBe(200)
    expect((await exchange(`GET /health HTTP/1.1\r\nHost: localhost:${port}`)).status).toBe(200)
    expect((await exchange(`GET /health HTTP/1.1\r\nHost: [::1]:${port}`)).status).toBe(200)
  })

  it("answers a preflight without parsing a body or counting an error, and CORS only for the listed origin", async () => {
    const allowed = await exchange(`OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type, authorization`)
    expect(allowed.status).toBe(204)
    expect(allowed.headers).toContain("access-control-allow-origin: https://app.example.com")
    expect(allowed.headers).toContain("access-control-allow-headers: content-type, authorization")
    const other = await exchange(`OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: https://other.example\r\nAccess-Control-Request-Method: POST`)
    expect(other.status).toBe(403)
    expect(other.headers).not.toContain("access-control-allow-origin")
    const call = await exchange(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: https://app.example.com\r\nContent-Type: application/json`, chat)
    expect(call.status).toBe(200)
    expect(call.headers).toContain("access-control-allow-origin: https://app.example.com")
    expect(call.headers).toContain("access-control-expose-headers: x-request-id")
    const status = (await (await request(`${sidecar.url}/status`)).body.json()) as { requests: { errors: number } }
    expect(status.requests.errors).toBe(0)
  })

  it("keeps CORS off by default: no CORS header for any origin", async () => {
    const plain = await startSidecar({ upstream: upstream.url, passthroughUpstream: Option.none() })
    try {
      const p = Number(new URL(plain.url).port)
      const res = await request(`http://127.0.0.1:${p}/v1/chat/completions`, { method: "OPTIONS", headers: { origin: "https://app.example.com", "access-control-request-method": "POST" } })
      await res.body.text()
      expect(res.statusCode).toBe(403)
      expect(res.headers["access-control-allow-origin"]).toBeUndefined()
    } finally {
      await plain.close()
    }
  })
})
