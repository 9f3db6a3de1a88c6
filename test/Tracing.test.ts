import { SpanKind, SpanStatusCode } from "@opentelemetry/api"
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Tracing from "../src/Observability/Tracing.js"
import { json, MockUpstream } from "./support/MockUpstream.js"
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
    // 120 RPM, burst 1: the second request waits up to 500 ms for a token (a busy machine may take 100 ms per request).
    const sidecar = await startSidecar({ upstream: upstream.url, rateRpm: 120, bucketCapacity: 1 }, { tracing: Tracing.layerWith(new SimpleSpanProcessor(exporter)) })
    // Read before close: shutting the SDK down empties the in-memory exporter.
    let finished: Array<ReadableSpan> = []
    try {
      const send = (headers: Record<string, string>) =>
        request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify({ model: "nvidia/deepseek-ai/r1" }) }).then((r) => r.body.text())
      await send({})
      await send({ traceparent: incoming, "x-priority": "high" })
      await until(() => exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER).length === 2)
      finished = [...exporter.getFinishedSpans()]
    } finally {
      await sidecar.close()
    }
    const spans = finished.filter((s) => s.spanContext().traceId === traceId)
    const byName = (name: string) => spans.find((s) => s.name === name)
    const root = spans.find((s) => s.kind === SpanKind.SERVER)!
    const queue = byName("sidecar.queue_wait")!
    const token = byName("sidecar.token_wait")!
    const call = spans.find((s) => s.kind === SpanKind.CLIENT)!
    expect(spans.map((s) => s.name).sort()).toEqual(["POST /v1/chat/completions", "POST /v1/chat/completions", "sidecar.queue_wait", "sidecar.token_wait"])
    expect(parentOf(root)).toBe("00f067aa0ba902b7")
    expect(parentOf(queue)).toBe(root.spanContext().spanId)
    expect(parentOf(token)).toBe(queue.spanContext().spanId)
    expect(parentOf(call)).toBe(root.spanContext().spanId)
    expect(root.attributes).toMatchObject({
      "http.request.method": "POST",
      "http.route": "/v1/chat/completions",
      "url.path": "/v1/chat/completions",
      "server.address": "127.0.0.1",
      "client.address": "127.0.0.1",
      "gen_ai.operation.name": "chat",
      "gen_ai.request.model": "nvidia/deepseek-ai/r1",
      "sidecar.priority": "high",
      "http.response.status_code": 200,
      "sidecar.retreat_state": "open", // the learning law (default) before any 429
      "sidecar.upstream_retries": 0
    })
    expect(call.attributes).toMatchObject({
      "http.request.method": "POST",
      "server.address": "127.0.0.1",
      "url.full": `${upstream.url}/chat/completions`,
      "gen_ai.request.model": "deepseek-ai/r1",
      "http.response.status_code": 200
    })
    expect(root.status.code).not.toBe(SpanStatusCode.ERROR)
    // Nothing Effect-internal on any span.
    for (const span of spans) expect(Object.keys(span.attributes).filter((k) => k.startsWith("span.") || k.startsWith("status.") || k.startsWith("code."))).toEqual([])
    expect(Number(root.attributes["sidecar.queue_wait_ms"])).toBeGreaterThanOrEqual(50)
    expect(durationMs(token)).toBeGreaterThanOrEqual(50)
    const forwarded = upstream.received.find((r) => String(r.headers.traceparent).includes(traceId))
    expect(forwarded?.headers.traceparent).toBe(`00-${traceId}-${call.spanContext().spanId}-01`)
    upstream.received.length = 0
  })

  it("marks 5xx and a passed-through 429 ERROR, and records the usage and model the answer reported", async () => {
    const exporter = new InMemorySpanExporter()
    const sidecar = await startSidecar({ upstream: upstream.url, maxRetries: 0 }, { tracing: Tracing.layerWith(new SimpleSpanProcessor(exporter)) })
    let finished: Array<ReadableSpan> = []
    try {
      const send = () => request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nvidia/meta/llama" }) }).then((r) => r.body.text())
      upstream.handler = (_req, res) => json(res, 200, { model: "meta/llama", choices: [], usage: { prompt_tokens: 11, completion_tokens: 7 } })
      await send()
      upstream.handler = (_req, res) => json(res, 502, { error: "bad" })
      await send()
      upstream.handler = (_req, res) => json(res, 429, { error: "slow down" })
      await send()
      await until(() => exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER).length === 3)
      finished = [...exporter.getFinishedSpans()]
    } finally {
      upstream.handler = (_req, res) => json(res, 200, { choices: [] })
      await sidecar.close()
    }
    const servers = finished.filter((s) => s.kind === SpanKind.SERVER)
    const clients = finished.filter((s) => s.kind === SpanKind.CLIENT)
    const byStatus = (spans: Array<ReadableSpan>, status: number) => spans.find((s) => s.attributes["http.response.status_code"] === status)!
    expect(byStatus(servers, 200).status.code).not.toBe(SpanStatusCode.ERROR)
    expect(byStatus(servers, 200).attributes).toMatchObject({ "gen_ai.response.model": "meta/llama", "gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 7 })
    for (const status of [502, 429]) {
      expect(byStatus(servers, status).status.code).toBe(SpanStatusCode.ERROR)
      expect(byStatus(servers, status).attributes["error.type"]).toBe(String(status))
      expect(byStatus(clients, status).status.code).toBe(SpanStatusCode.ERROR)
    }
    upstream.received.length = 0
  })

  it("passes the client's traceparent through untouched when tracing is off", async () => {
    upstream.received.length = 0
    const sidecar = await startSidecar({ upstream: upstream.url })
    try {
      await (await request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", traceparent: incoming }, body: "{\"model\":\"nvidia/x\"}" })).body.text()
    } finally {
      await sidecar.close()
    }
    expect(upstream.received[0]?.headers.traceparent).toBe(incoming)
    expect(upstream.received[0]?.headers.b3).toBeUndefined()
    upstream.received.length = 0
  })

  it("exports spans over OTLP/HTTP, protobuf by default, with no readiness-probe spans", async () => {
    const got = await exportedWith({ OTEL_SERVICE_NAME: "sidecar-under-test" }, true)
    expect(got.paths).toContain("/v1/traces")
    expect(got.contentTypes.every((t) => t === "application/x-protobuf")).toBe(true)
    expect(got.all).toContain("POST /v1/chat/completions")
    expect(got.all).toContain("sidecar-under-test")
    // The probe (GET {upstream}/models, run by /health/ready) made no span of its own.
    expect(got.all).not.toContain("http.client")
    expect(got.all).not.toContain("/models")
  })

  it("speaks http/json when OTEL_EXPORTER_OTLP_PROTOCOL says so, and honours OTEL_TRACES_SAMPLER", async () => {
    const json = await exportedWith({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })
    expect(json.contentTypes).toContain("application/json")
    expect(JSON.parse(json.bodies[0]!)).toHaveProperty("resourceSpans")
    const off = await exportedWith({ OTEL_TRACES_SAMPLER: "always_off" })
    expect(off.bodies.join("")).not.toContain("POST /v1/chat/completions")
  })

  it("refuses an OTLP protocol it cannot speak at start-up", async () => {
    const sidecar = spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })
    await expect(sidecar).rejects.toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL: expected one of http\/protobuf, http\/json/)
  })
})

/** Runs the built CLI against an OTLP receiver the test owns; one chat request (and a readiness probe). */
const exportedWith = async (env: Record<string, string>, probe = false) => {
  const bodies: Array<string> = []
  const paths: Array<string> = []
  const contentTypes: Array<string> = []
  const receiver = createServer((req, res) => {
    let body = ""
    req.on("data", (d: Buffer) => (body += d.toString("latin1")))
    req.on("end", () => {
      paths.push(req.url ?? "")
      contentTypes.push(String(req.headers["content-type"]))
      bodies.push(body)
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve))
  const port = (receiver.address() as AddressInfo).port
  const sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, ...env })
  try {
    if (probe) await (await request(`${sidecar.url}/health/ready`)).body.text()
    await (await request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{\"model\":\"nvidia/x\"}" })).body.text()
  } finally {
    sidecar.child.kill("SIGTERM")
    await sidecar.exited
    receiver.close()
  }
  upstream.received.length = 0
  return { bodies, paths, contentTypes, all: bodies.join("\n") }
}

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId
const durationMs = (span: ReadableSpan) => span.duration[0] * 1000 + span.duration[1] / 1e6
