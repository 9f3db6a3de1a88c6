import { Duration, Option, Redacted } from "effect"
import { type AddressInfo, connect, createServer as createNetServer } from "node:net"
import { Readable } from "node:stream"
import { request as undiciRequest } from "undici"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream, sse } from "./support/MockUpstream.js"
import { metricValue, scrape, settlesWithin, until } from "./support/Observe.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"

let upstream: MockUpstream
let sidecar: RunningSidecar

beforeAll(async () => {
  upstream = await MockUpstream.start()
  sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 100_000, bucketCapacity: 1000, maxBodyBytes: 1024 * 1024 })
})
afterAll(async () => {
  await sidecar.close()
  await upstream.close()
})
afterEach(() => {
  upstream.received.length = 0
  upstream.handler = (_req, res) => json(res, 200, { id: "chatcmpl-mock", choices: [] })
})

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  undiciRequest(`${sidecar.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

/** Sends bytes as they are, so paths reach the server unnormalised. */
const raw = (text: string) =>
  new Promise<string>((resolve, reject) => {
    const socket = connect(Number(new URL(sidecar.url).port), "127.0.0.1", () => socket.write(text))
    let out = ""
    socket.on("data", (d) => (out += d.toString()))
    socket.on("end", () => resolve(out))
    socket.on("error", reject)
  })

describe("proxying", () => {
  it("forwards to /v1 once, swaps the client's key for the sidecar's and drops hop-by-hop headers", async () => {
    const body = JSON.stringify({ model: "meta/llama-3.1-8b-instruct", messages: [] })
    const answer = await raw([
      "POST /v1/chat/completions HTTP/1.1",
      "Host: 127.0.0.1",
      "Content-Type: application/json",
      `Content-Length: ${body.length}`,
      "Authorization: Bearer client-key",
      "Connection: close, x-secret-hop",
      "X-Secret-Hop: 1",
      "Proxy-Authorization: Basic abc",
      "TE: trailers",
      "Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "X-Custom: kept",
      "",
      body
    ].join("\r\n"))
    expect(answer).toMatch(/^HTTP\/1.1 200/)
    const seen = upstream.received[0]!
    expect(seen.url).toBe("/v1/chat/completions")
    expect(seen.headers.authorization).toBe("Bearer test-key")
    expect(seen.headers["x-secret-hop"]).toBeUndefined()
    expect(seen.headers["proxy-authorization"]).toBeUndefined()
    expect(seen.headers.te).toBeUndefined()
    expect(seen.headers.traceparent).toBe("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    expect(seen.headers.b3).toBeUndefined()
    expect(seen.headers["x-custom"]).toBe("kept")
  })

  it("strips a gateway prefix in front of a full model id and keeps two-segment NVIDIA ids", async () => {
    await (await post("/v1/chat/completions", { model: "nvidia/deepseek-ai/deepseek-v4-pro", messages: [{ role: "user", content: "hi" }] })).body.text()
    await (await post("/v1/chat/completions", { model: "nvidia/llama-3.1-nemotron-70b-instruct" })).body.text()
    expect(upstream.received[0]!.json).toEqual({ model: "deepseek-ai/deepseek-v4-pro", messages: [{ role: "user", content: "hi" }] })
    expect(upstream.received[1]!.json?.model).toBe("nvidia/llama-3.1-nemotron-70b-instruct")
  })

  it("passes upstream statuses and bodies through unchanged", async () => {
    upstream.handler = (_req, res) => json(res, 422, { error: { message: "bad model", type: "invalid_request_error" } }, { "x-upstream": "yes" })
    const res = await post("/v1/embeddings", { model: "nvidia/nv-embed", input: "x" })
    expect(res.statusCode).toBe(422)
    expect(res.headers["x-upstream"]).toBe("yes")
    expect(await res.body.json()).toEqual({ error: { message: "bad model", type: "invalid_request_error" } })
  })

  it("serves model listing from a short cache, so a flood of listings spends one upstream call", async () => {
    upstream.handler = (req, res) => json(res, 200, { object: "list", data: [{ id: "meta/llama", object: "model", url: req.url }] })
    for (let i = 0; i < 20; i++) {
      const res = await undiciRequest(`${sidecar.url}/v1/models`)
      expect(await res.body.json()).toEqual({ object: "list", data: [{ id: "meta/llama", object: "model", url: "/v1/models" }] })
    }
    expect(upstream.received.filter((r) => r.url === "/v1/models")).toHaveLength(1)
    expect(upstream.received[0]!.headers.authorization).toBe("Bearer test-key")
    upstream.received.length = 0
    const other = await undiciRequest(`${sidecar.url}/v1/files//abc`)
    await other.body.text()
    expect(upstream.received[0]!.url).toBe("/v1/files/abc")
  })

  it("marks limited answers with rate-limit headers", async () => {
    const res = await post("/v1/chat/completions", { model: "nvidia/x" }, { "x-priority": "HIGH" })
    await res.body.text()
    expect(res.headers["x-sidecar-priority"]).toBe("high")
    expect(res.headers["x-sidecar-upstream-retries"]).toBe("0")
    expect(Number(res.headers["x-ratelimit-limit-requests"])).toBe(100_000)
    expect(res.headers["x-sidecar-queue-wait-ms"]).toMatch(/^\d+$/)
  })
})

describe("every path that spends the key is limited, every byte relayed", () => {
  it("admits requests with no model, a non-string model, multipart bodies and catch-all paths through the limiter", async () => {
    upstream.handler = (_req, res) => json(res, 200, { ok: true })
    const answers = [
      await undiciRequest(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }),
      await undiciRequest(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"model":7}' }),
      await undiciRequest(`${sidecar.url}/v1/audio/transcriptions`, {
        method: "POST",
        headers: { "content-type": "multipart/form-data; boundary=x" },
        body: '--x\r\ncontent-disposition: form-data; name="model"\r\n\r\nnvidia/parakeet\r\n--x--\r\n'
      }),
      await undiciRequest(`${sidecar.url}/v1/files/abc`)
    ]
    for (const res of answers) {
      await res.body.text()
      expect(res.statusCode).toBe(200)
      // Only admitted requests carry the limiter's headers.
      expect(res.headers["x-sidecar-priority"]).toBe("normal")
    }
  })

  it("relays the body byte for byte when it strips the gateway prefix", async () => {
    const body = '{"model":"nvidia/deepseek-ai/r1","temperature":1e400,"seed":12345678901234567890,"x":-0}'
    const res = await undiciRequest(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body })
    await res.body.text()
    expect(upstream.received.at(-1)?.body).toBe('{"model":"deepseek-ai/r1","temperature":1e400,"seed":12345678901234567890,"x":-0}')
  })

  it("answers a 10,000-deep body (and every other body) with a status, never a dropped socket", async () => {
    const deep = `{"model":"nvidia/a/b","x":${"[".repeat(10_000)}${"]".repeat(10_000)}}`
    const res = await undiciRequest(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: deep })
    await res.body.text()
    expect([200, 400]).toContain(res.statusCode)
    const escaped = await undiciRequest(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"\\u006dodel":"nvidia/a/b"}' })
    expect(escaped.statusCode).toBe(400)
    expect(((await escaped.body.json()) as { error: { code: string } }).error.code).toBe("invalid_json")
  })
})

describe("streaming", () => {
  it("delivers chunks as they arrive, not at once", async () => {
    upstream.handler = (_req, res) => sse(res, 20, 50)
    const started = performance.now()
    const res = await post("/v1/chat/completions", { model: "nvidia/x", stream: true })
    expect(res.headers["content-type"]).toBe("text/event-stream")
    expect(res.headers["x-accel-buffering"]).toBe("no")
    const arrivals: Array<number> = []
    let text = ""
    for await (const chunk of res.body) {
      arrivals.push(performance.now() - started)
      text += chunk.toString()
    }
    expect(text).toContain("data: [DONE]")
    expect(text.match(/data: \{"i":\d+\}/g)).toHaveLength(20)
    expect(arrivals.length).toBeGreaterThanOrEqual(10)
    expect(arrivals[arrivals.length - 1]! - arrivals[0]!).toBeGreaterThanOrEqual(700)
  })

  it("aborts the upstream request within 1 s when the client disconnects mid-stream", async () => {
    upstream.handler = (_req, res) => sse(res, 200, 20)
    const controller = new AbortController()
    const res = await undiciRequest(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "nvidia/x", stream: true }),
      headers: { "content-type": "application/json" },
      signal: controller.signal
    })
    const reader = res.body[Symbol.asyncIterator]()
    await reader.next()
    const abortedAt = performance.now()
    controller.abort()
    await expect(settlesWithin(upstream.received[0]!.aborted, 1000)).resolves.toBe("done")
    expect(upstream.received[0]!.abortedAt! - abortedAt).toBeLessThan(1000)
  })

  it("aborts the upstream request when the client leaves before headers arrive", async () => {
    upstream.handler = () => new Promise(() => {})
    const controller = new AbortController()
    const sent = undiciRequest(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "nvidia/x" }),
      signal: controller.signal
    }).catch(() => "aborted")
    await until(() => upstream.received.length === 1)
    controller.abort()
    expect(await sent).toBe("aborted")
    await expect(settlesWithin(upstream.received[0]!.aborted, 1000)).resolves.toBe("done")
  })

  it("ends the client stream with an SSE error event and no [DONE] when upstream resets mid-stream", async () => {
    upstream.handler = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.write("data: {\"i\":0}\n\n")
      setTimeout(() => res.socket?.destroy(), 50)
    }
    const res = await post("/v1/chat/completions", { model: "nvidia/x", stream: true })
    const text = await res.body.text()
    expect(text).toContain("data: {\"i\":0}")
    expect(text).toContain("event: error")
    expect(text).not.toContain("[DONE]")
  })
})

describe("errors", () => {
  it("answers 413 from content-length without reading the body", async () => {
    const answer = await raw(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${20 * 1024 * 1024}\r\n\r\n{"model":`)
    expect(answer).toMatch(/^HTTP\/1.1 413/)
    expect(answer).toContain("body_too_large")
    expect(upstream.received).toHaveLength(0)
  })

  it("delivers the 413 to a client still uploading a chunked body past the limit", async () => {
    const res = await undiciRequest(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: Readable.from((function*() {
        for (let i = 0; i < 32; i++) yield Buffer.alloc(64 * 1024, 120)
      })())
    })
    expect(res.statusCode).toBe(413)
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe("body_too_large")
    expect(upstream.received).toHaveLength(0)
  })

  it("forgets an upload the client abandons halfway, so shutdown does not wait for it", async () => {
    const own = await startSidecar({ upstream: upstream.url })
    const socket = connect(Number(new URL(own.url).port), "127.0.0.1")
    await new Promise<void>((resolve) => socket.on("connect", resolve))
    // Half the promised body, then the client hangs up.
    socket.end("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
    // The abandoned request is counted as 499 once the sidecar has let it go.
    await until(async () => metricValue(await scrape(own.metricsUrl), "sidecar_requests_total{priority=\"normal\",status=\"499\"}") === 1)
    const closing = performance.now()
    await own.close()
    // The drain timeout is 1 s: a request still counted in flight would hold the close that long.
    expect(performance.now() - closing).toBeLessThan(500)
    // (the scrape's readiness probe may GET /v1/models; nothing of the upload was forwarded)
    expect(upstream.received.filter((r) => r.method === "POST")).toHaveLength(0)
  })

  it("delivers the answer of a valid request even when garbage follows it on the same connection", async () => {
    const body = JSON.stringify({ model: "nvidia/x" })
    const answer = await raw(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}\x01\x02 NOT HTTP\r\n\r\n`)
    expect(answer).toMatch(/^HTTP\/1.1 200/)
    expect(answer).toContain("chatcmpl-mock")
    expect(upstream.received).toHaveLength(1)
  })

  it("answers garbage alone with a 400 body, and too many headers with 431", async () => {
    expect(await raw("\x01\x02 NOT HTTP\r\n\r\n")).toMatch(/^HTTP\/1.1 400[^]*invalid_path/)
    const headers = Array.from({ length: 150 }, (_, i) => `x-h${i}: v`).join("\r\n")
    const many = await raw(`GET /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}\r\nConnection: close\r\n\r\n`)
    expect(many).toMatch(/^HTTP\/1.1 431[^]*headers_too_large/)
    expect(upstream.received).toHaveLength(0)
  })

  it("answers 400 with an OpenAI error body for invalid JSON", async () => {
    const res = await post("/v1/chat/completions", "{not json")
    expect(res.statusCode).toBe(400)
    const body = (await res.body.json()) as { error: { code: string; type: string; message: string } }
    expect(body.error.code).toBe("invalid_json")
    expect(body.error.type).toBe("invalid_request_error")
    expect(upstream.received).toHaveLength(0)
  })

  it("refuses traversal and absolute-URL targets without forwarding them", async () => {
    for (const target of ["/v1/../admin", "/v1/%2e%2e/secret", "/v1/models/..%2fetc", "/v1/a\\..\\b", "http://evil.example/v1/models", "//evil/v1/models", "/v1/%zz"]) {
      const answer = await raw(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
      expect(answer, target).toMatch(/^HTTP\/1.1 400/)
      expect(answer, target).toContain("invalid_path")
    }
    expect(upstream.received).toHaveLength(0)
  })

  it("answers 404 outside /v1", async () => {
    const res = await undiciRequest(`${sidecar.url}/nope`)
    expect(res.statusCode).toBe(404)
    await res.body.text()
  })
})

describe("upstream failures", () => {
  it("answers 502 when the upstream refuses connections", async () => {
    const down = await startSidecar({ upstream: "http://127.0.0.1:9/v1" })
    try {
      const res = await undiciRequest(`${down.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/x" }) })
      expect(res.statusCode).toBe(502)
      const body = (await res.body.json()) as { error: { code: string; message: string } }
      expect(body.error.code).toBe("bad_gateway")
      expect(body.error.message).not.toContain("test-key")
    } finally {
      await down.close()
    }
  })

  it("answers 504 when the upstream sends no headers within the timeout", async () => {
    const slow = await MockUpstream.start()
    slow.handler = () => new Promise(() => {})
    const timing = await startSidecar({ upstream: slow.url, timeout: Duration.millis(300) })
    try {
      const res = await undiciRequest(`${timing.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/x" }) })
      expect(res.statusCode).toBe(504)
      expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe("upstream_timeout")
    } finally {
      await timing.close()
      await slow.close()
    }
  })

  it("lists the passthrough upstream's models with the primary's, as routing serves them", async () => {
    const other = await MockUpstream.start()
    upstream.handler = (_req, res) => json(res, 200, { object: "list", data: [{ id: "meta/llama" }, { id: "shared/model" }] })
    other.handler = (req, res) => json(res, 200, { object: "list", data: [{ id: "openai/gpt-4o", auth: req.headers.authorization }, { id: "shared/model" }] })
    const split = await startSidecar({ upstream: upstream.url, passthroughUpstream: Option.some(other.url) })
    try {
      const res = await undiciRequest(`${split.url}/v1/models`, { headers: { authorization: "Bearer client-own" } })
      expect(res.statusCode).toBe(200)
      expect(await res.body.json()).toEqual({
        object: "list",
        data: [{ id: "meta/llama" }, { id: "shared/model" }, { id: "openai/gpt-4o", auth: "Bearer client-own" }]
      })
      // Only the primary's listing goes out with the sidecar's key.
      expect(other.received[0]!.headers.authorization).toBe("Bearer client-own")
      other.handler = (_req, res) => json(res, 500, {})
      const degraded = await undiciRequest(`${split.url}/v1/models`)
      expect(await degraded.body.json()).toEqual({ object: "list", data: [{ id: "meta/llama" }, { id: "shared/model" }] })
    } finally {
      await split.close()
      await other.close()
      upstream.received.length = 0
    }
  })

  it("sends non-alias models to the passthrough upstream unthrottled, with the client's own key", async () => {
    const other = await MockUpstream.start()
    const split = await startSidecar({ upstream: upstream.url, passthroughUpstream: Option.some(other.url), rateRpm: 1, bucketCapacity: 1 })
    try {
      for (let i = 0; i < 3; i++) {
        const res = await undiciRequest(`${split.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: "Bearer client-own" },
          body: JSON.stringify({ model: "openai/gpt-4o" })
        })
        expect(res.statusCode).toBe(200)
        await res.body.text()
      }
      expect(other.received).toHaveLength(3)
      expect(other.received[0]!.headers.authorization).toBe("Bearer client-own")
      expect(upstream.received).toHaveLength(0)
    } finally {
      await split.close()
      await other.close()
    }
  })
})

describe("the key in relayed error bodies", () => {
  it("masks the key an upstream echoes in an error body, streamed or consulted, across chunk boundaries", async () => {
    upstream.handler = (req, res) => {
      res.writeHead(req.json?.model === "nvidia/limit" ? 429 : 401, { "content-type": "text/plain" })
      // The key split over two writes, as a proxy in front of the upstream might send it.
      const auth = String(req.headers.authorization)
      res.write(`you sent ${auth.slice(0, 12)}`)
      setTimeout(() => res.end(`${auth.slice(12)} which is wrong`), 20)
    }
    const own = await startSidecar({ upstream: upstream.url, apiKey: Option.some(Redacted.make("nvapi-secret-key-0123456789")), maxRetries: 0 })
    try {
      for (const model of ["nvidia/x", "nvidia/limit"]) {
        const res = await undiciRequest(`${own.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model }) })
        const text = await res.body.text()
        expect(text).not.toContain("nvapi-secret-key-0123456789")
        expect(text).toBe(`you sent Bearer ${"*".repeat("nvapi-secret-key-0123456789".length)} which is wrong`)
      }
    } finally {
      await own.close()
    }
  })
})

describe("drain deadline", () => {
  it("ends a stream still open at the drain deadline with the SSE error event, not a bare cut", async () => {
    upstream.handler = (_req, res) => void sse(res, 10_000, 50)
    const own = await startSidecar({ upstream: upstream.url, drainTimeout: Duration.millis(300) })
    const res = await undiciRequest(`${own.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "nvidia/x", stream: true })
    })
    const text = res.body.text()
    await until(() => upstream.received.length === 1)
    await own.close()
    const received = await text
    expect(received).toContain("data: {\"i\":0}")
    expect(received.trimEnd().endsWith(`event: error\ndata: {"error":{"message":"Upstream stream failed","type":"upstream_error","code":"upstream_stream_error"}}`)).toBe(true)
  })
})

describe("connections", () => {
  it("sends a request once more when the pooled connection it reused was closed by the upstream", async () => {
    // Answers the first request of each connection with keep-alive, then drops the connection
    // when a second request arrives on it: the race of a keep-alive timeout, made certain.
    const served: Array<number> = []
    const flaky = createNetServer((socket) => {
      let requests = 0
      let buffered = ""
      socket.on("data", (d: Buffer) => {
        buffered += d.toString()
        while (buffered.includes("\r\n\r\n")) {
          const [head = "", rest = ""] = buffered.split("\r\n\r\n", 2)
          const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0)
          if (rest.length < length) return
          buffered = rest.slice(length)
          if (++requests > 1) return void socket.destroy()
          served.push(requests)
          socket.write("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nkeep-alive: timeout=60\r\n\r\n{\"ok\":true}")
        }
      })
    })
    await new Promise<void>((resolve) => flaky.listen(0, "127.0.0.1", resolve))
    const own = await startSidecar({ upstream: `http://127.0.0.1:${(flaky.address() as AddressInfo).port}/v1`, upstreamConnections: 1 })
    try {
      for (let i = 0; i < 3; i++) {
        const res = await undiciRequest(`${own.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "nvidia/x" })
        })
        expect(res.statusCode).toBe(200)
        expect(await res.body.text()).toBe("{\"ok\":true}")
      }
      expect(served).toHaveLength(3)
    } finally {
      await own.close()
      flaky.close()
    }
  })

  it("answers 408 to a client that trickles its headers or stalls its body", async () => {
    const own = await startSidecar({ upstream: upstream.url, headersTimeout: Duration.millis(500), bodyTimeout: Duration.millis(300) })
    const port = Number(new URL(own.url).port)
    const talk = (text: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(port, "127.0.0.1", () => socket.write(text))
        let out = ""
        socket.on("data", (d) => (out += d.toString()))
        socket.on("close", () => resolve(out))
      })
    try {
      const started = performance.now()
      const slowHead = await talk("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
      expect(slowHead).toMatch(/^HTTP\/1.1 408/)
      expect(slowHead).toContain("request_timeout")
      const stalled = await talk("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
      expect(stalled).toMatch(/^HTTP\/1.1 408/)
      expect(performance.now() - started).toBeLessThan(5000)
      expect(upstream.received).toHaveLength(0)
    } finally {
      await own.close()
    }
  })
})
