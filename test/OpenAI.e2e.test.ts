import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream, sse } from "./support/MockUpstream.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"

let upstream: MockUpstream
let sidecar: RunningSidecar
let client: OpenAI

beforeAll(async () => {
  upstream = await MockUpstream.start()
  upstream.handler = (req, res) => {
    if (req.url.startsWith("/v1/models/")) return json(res, 200, { id: decodeURIComponent(req.url.slice("/v1/models/".length)), object: "model", created: 0, owned_by: "nvidia" })
    if (req.url.startsWith("/v1/models")) return json(res, 200, { object: "list", data: [{ id: "deepseek-ai/deepseek-v4-pro", object: "model", created: 0, owned_by: "nvidia" }] })
    if (req.url === "/v1/embeddings") return json(res, 200, { object: "list", model: req.json?.model, data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2] }], usage: { prompt_tokens: 1, total_tokens: 1 } })
    if (req.json?.model === "nvidia/always-429") return json(res, 429, { error: { message: "slow down", type: "rate_limit" } })
    if (req.json?.stream === true) {
      return sse(res, 3, 10, (i) => ({ id: "c1", object: "chat.completion.chunk", created: 0, model: req.json?.model, choices: [{ index: 0, delta: { content: `tok${i} ` }, finish_reason: null }] }))
    }
    return json(res, 200, {
      id: "chatcmpl-1",
      object: "chat.completion",
      created: 0,
      model: req.json?.model,
      choices: [{ index: 0, message: { role: "assistant", content: "hello" }, finish_reason: "stop" }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }
    })
  }
  // ADR-009 retries an always-429 upstream at once; the learning law would hold each retry until
  // its 60 s window slides (see test/Admission.test.ts and the simulator for the law).
  sidecar = await startSidecar({ upstream: upstream.url, maxRetries: 1, rateRpm: 6000, rateControl: "adr009" })
  client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "client-side-key", maxRetries: 0 })
})
afterAll(async () => {
  await sidecar.close()
  await upstream.close()
})

describe("the openai SDK through the sidecar", () => {
  it("completes a chat, with the gateway prefix stripped upstream", async () => {
    const answer = await client.chat.completions.create({ model: "nvidia/deepseek-ai/deepseek-v4-pro", messages: [{ role: "user", content: "hi" }] })
    expect(answer.choices[0]?.message.content).toBe("hello")
    expect(answer.model).toBe("deepseek-ai/deepseek-v4-pro")
  })

  it("streams a chat chunk by chunk", async () => {
    const stream = await client.chat.completions.create({ model: "nvidia/x/y", messages: [{ role: "user", content: "hi" }], stream: true })
    const parts: Array<string> = []
    for await (const chunk of stream) parts.push(chunk.choices[0]?.delta.content ?? "")
    expect(parts).toEqual(["tok0 ", "tok1 ", "tok2 "])
  })

  it("creates embeddings", async () => {
    const e = await client.embeddings.create({ model: "nvidia/nv-embedqa-e5-v5", input: "text", encoding_format: "float" })
    expect(e.data[0]?.embedding).toEqual([0.1, 0.2])
  })

  it("lists and retrieves models", async () => {
    const page = await client.models.list()
    expect(page.data.map((m) => m.id)).toEqual(["deepseek-ai/deepseek-v4-pro"])
  })

  it("retrieves a model whose id holds a slash (the SDK sends %2F), gateway prefix stripped", async () => {
    const before = upstream.received.length
    expect((await client.models.retrieve("meta/llama-3.1-8b-instruct")).id).toBe("meta/llama-3.1-8b-instruct")
    expect((await client.models.retrieve("nvidia/meta/llama-3.1-8b-instruct")).id).toBe("meta/llama-3.1-8b-instruct")
    expect(upstream.received.slice(before).map((r) => r.url)).toEqual(["/v1/models/meta/llama-3.1-8b-instruct", "/v1/models/meta/llama-3.1-8b-instruct"])
    // Decoding never opens a way out of /v1/models.
    const escape = await client.models.retrieve("../../admin").catch((e: unknown) => e)
    expect((escape as InstanceType<typeof OpenAI.APIError>).status).toBe(400)
  })

  it("gives the SDK a request id for every answer, errors included", async () => {
    const { response, request_id } = await client.chat.completions.create({ model: "nvidia/x/y", messages: [] }).withResponse()
    expect(response.status).toBe(200)
    expect(request_id).toMatch(/^[0-9a-f-]{36}$/)
    const error = await client.chat.completions.create({ model: "nvidia/always-429", messages: [] }).catch((e: unknown) => e)
    expect((error as InstanceType<typeof OpenAI.APIError>).requestID).toMatch(/^[0-9a-f-]{36}$/)
  })

  it("does not let the SDK's own retries multiply a 429 the sidecar already retried", async () => {
    const retrying = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "k", maxRetries: 2 })
    const before = upstream.received.length
    const error = await retrying.chat.completions.create({ model: "nvidia/always-429", messages: [] }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.RateLimitError)
    const headers = (error as InstanceType<typeof OpenAI.RateLimitError>).headers
    expect(headers?.get("x-should-retry")).toBe("false")
    expect(Number(headers?.get("retry-after-ms"))).toBeGreaterThan(0)
    // One call plus the sidecar's one retry; the SDK's two retries would have made six.
    expect(upstream.received.length - before).toBe(2)
  })

  it("surfaces an upstream 429 after the sidecar's own retries as RateLimitError with Retry-After", async () => {
    const before = upstream.received.length
    const error = await client.chat.completions.create({ model: "nvidia/always-429", messages: [] }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.RateLimitError)
    const e = error as InstanceType<typeof OpenAI.RateLimitError>
    expect(e.status).toBe(429)
    expect(Number(e.headers?.get("retry-after"))).toBeGreaterThanOrEqual(1)
    expect(e.headers?.get("x-sidecar-upstream-retries")).toBe("1")
    expect(upstream.received.length - before).toBe(2)
  })

  it("lets the SDK read a 413 for an oversized upload, once, instead of a broken pipe and retries", async () => {
    const small = await startSidecar({ upstream: upstream.url, maxBodyBytes: 64 * 1024 })
    try {
      const retrying = new OpenAI({ baseURL: `${small.url}/v1`, apiKey: "k", maxRetries: 2 })
      const before = upstream.received.length
      const error = await retrying.chat.completions.create({ model: "nvidia/x", messages: [{ role: "user", content: "x".repeat(1024 * 1024) }] }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.APIError)
      expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(413)
      expect(upstream.received.length - before).toBe(0)
    } finally {
      await small.close()
    }
  })

  it("surfaces our own errors as the SDK's typed errors", async () => {
    // No queue and one token: the first call is admitted (and finds the upstream down), the second finds no room.
    const down = await startSidecar({ upstream: "http://127.0.0.1:9/v1", queueMax: 0, queueFullPolicy: "reject", rateRpm: 1, bucketCapacity: 1 })
    try {
      const offline = new OpenAI({ baseURL: `${down.url}/v1`, apiKey: "k", maxRetries: 0 })
      const first = await offline.chat.completions.create({ model: "nvidia/x", messages: [] }).catch((e: unknown) => e)
      expect((first as InstanceType<typeof OpenAI.APIError>).status).toBe(502)
      const full = await offline.chat.completions.create({ model: "nvidia/x", messages: [] }).catch((e: unknown) => e)
      expect(full).toBeInstanceOf(OpenAI.InternalServerError)
      expect((full as InstanceType<typeof OpenAI.APIError>).status).toBe(503)
      expect((full as InstanceType<typeof OpenAI.APIError>).code).toBe("queue_full")
      const unreachable = await offline.models.list().catch((e: unknown) => e)
      expect((unreachable as InstanceType<typeof OpenAI.APIError>).status).toBe(502)
      expect((unreachable as InstanceType<typeof OpenAI.APIError>).code).toBe("bad_gateway")
    } finally {
      await down.close()
    }
  })
})
