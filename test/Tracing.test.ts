import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Tracing from "../src/Tracing.js"
import { MockUpstream } from "./support/MockUpstream.js"
import { until } from "./support/Observe.js"
import { spawnSidecar } from "./support/Process.js"
import { startSidecar } from "./support/Sidecar.js"

let upstream: MockUpstream
beforeAll(async () => {
  upstream = await MockUpstream.start()
})
afterAll(async () => {
  await upstream.close()
})

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
const incoming = `00-${traceId}-00f067aa0ba902b7-01`

describe("tracing", () => {
  it("records one span tree per queued request and continues the client's trace to the upstream", async () => {
    const exporter = new InMemorySpanExporter()
    // 120 RPM, burst 1: the first request spends the only token, the traced one waits up to 500 ms
    // for the next. (At 600 RPM a cold first call could take longer than the 100 ms refill, and the
    // traced request then found a token waiting: no token_wait span.)
    const sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 120, bucketCapacity: 1 }, { tracing: Tracing.layerWith(new SimpleSpanProcessor(exporter)) })
    // Read before close: shutting the SDK down empties the in-memory exporter.
    let finished: Array<ReadableSpan> = []
    try {
      const send = (headers: Record<string, string>) =>
        request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers, body: JSON.stringify({ model: "nvidia/deepseek-ai/r1" }) }).then((r) => r.body.text())
      const before = upstream.received.length
      const first = send({})
      // The token is spent once the upstream has the first call: send the traced one right then.
      await until(() => upstream.received.length > before)
      await Promise.all([first, send({ traceparent: incoming, "x-priority": "high" })])
      await until(() => exporter.getFinishedSpans().filter((s) => s.name === "sidecar.request").length === 2)
      finished = [...exporter.getFinishedSpans()]
    } finally {
      await sidecar.close()
    }
    const spans = finished.filter((s) => s.spanContext().traceId === traceId)
    const byName = (name: string) => spans.find((s) => s.name === name)
    const root = byName("sidecar.request")!
    const queue = byName("sidecar.queue_wait")!
    const token = byName("sidecar.token_wait")!
    const call = byName("sidecar.upstream")!
    expect(spans.map((s) => s.name).sort()).toEqual(["sidecar.queue_wait", "sidecar.request", "sidecar.token_wait", "sidecar.upstream"])
    expect(parentOf(root)).toBe("00f067aa0ba902b7")
    expect(parentOf(queue)).toBe(root.spanContext().spanId)
    expect(parentOf(token)).toBe(queue.spanContext().spanId)
    expect(parentOf(call)).toBe(root.spanContext().spanId)
    expect(root.attributes).toMatchObject({
      "sidecar.priority": "high",
      "sidecar.model": "nvidia/deepseek-ai/r1",
      "http.response.status_code": 200,
      "sidecar.retreat_state": "normal",
      "sidecar.upstream_retries": 0
    })
    expect(Number(root.attributes["sidecar.queue_wait_ms"])).toBeGreaterThanOrEqual(50)
    expect(durationMs(token)).toBeGreaterThanOrEqual(50)
    const forwarded = upstream.received.find((r) => String(r.headers.traceparent).includes(traceId))
    expect(forwarded?.headers.traceparent).toBe(`00-${traceId}-${call.spanContext().spanId}-01`)
    upstream.received.length = 0
  })

  it("passes the client's traceparent through untouched when tracing is off", async () => {
    upstream.received.length = 0
    const sidecar = await startSidecar({ upstream: upstream.url })
    try {
      await (await request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { traceparent: incoming }, body: "{\"model\":\"nvidia/x\"}" })).body.text()
    } finally {
      await sidecar.close()
    }
    expect(upstream.received[0]?.headers.traceparent).toBe(incoming)
    expect(upstream.received[0]?.headers.b3).toBeUndefined()
    upstream.received.length = 0
  })

  it("exports spans over OTLP/HTTP when the standard variables are set", async () => {
    const bodies: Array<string> = []
    const paths: Array<string> = []
    const receiver = createServer((req, res) => {
      let body = ""
      req.on("data", (d: Buffer) => (body += d.toString("latin1")))
      req.on("end", () => {
        paths.push(req.url ?? "")
        bodies.push(body)
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve))
    const port = (receiver.address() as AddressInfo).port
    const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_SERVICE_NAME: "sidecar-under-test" })
    try {
      await (await request(`${sidecar.url}/v1/chat/completions`, { method: "POST", body: "{\"model\":\"nvidia/x\"}" })).body.text()
    } finally {
      sidecar.child.kill("SIGTERM")
      await sidecar.exited
      receiver.close()
    }
    expect(paths).toContain("/v1/traces")
    const all = bodies.join("\n")
    expect(all).toContain("sidecar.request")
    expect(all).toContain("sidecar-under-test")
    upstream.received.length = 0
  })
})

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId
const durationMs = (span: ReadableSpan) => span.duration[0] * 1000 + span.duration[1] / 1e6
