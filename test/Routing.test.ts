import { Either, Option } from "effect"
import { describe, expect, it } from "vitest"
import { toErrorResponse } from "../src/Common/ErrorResponse.js"
import { requestHeaders, responseHeaders } from "../src/DataPath/Headers.js"
import { normalizePath } from "../src/DataPath/RequestPath.js"
import * as Errors from "../src/Common/Errors.js"
import { classify } from "../src/DataPath/Routing.js"
import { joinTo, upstreamBase } from "../src/DataPath/UpstreamUrl.js"

const aliases = ["nvidia", "nvidia-gateway", "nvidiavx", "nvidiavx18088980513"]

describe("classify", () => {
  it("limits gateway aliases case-insensitively and strips the prefix of a full model id", () => {
    const r = classify("NVIDIA/deepseek-ai/deepseek-v4-pro", { gatewayAliases: aliases, hasPassthrough: true })
    expect(r).toEqual({ limited: true, upstream: "primary", rewrittenModel: Option.some("deepseek-ai/deepseek-v4-pro") })
    expect(classify("nvidiavx18088980513/meta/llama", { gatewayAliases: aliases, hasPassthrough: true }).rewrittenModel).toEqual(Option.some("meta/llama"))
  })

  it("keeps a two-segment NVIDIA model id as it is", () => {
    expect(classify("nvidia/llama-3.1-nemotron-70b-instruct", { gatewayAliases: aliases, hasPassthrough: false }))
      .toEqual({ limited: true, upstream: "primary", rewrittenModel: Option.none() })
  })

  it("limits every model when no passthrough upstream exists, and none when one does", () => {
    expect(classify("meta/llama-3.1-8b-instruct", { gatewayAliases: aliases, hasPassthrough: false }).limited).toBe(true)
    expect(classify("meta/llama-3.1-8b-instruct", { gatewayAliases: aliases, hasPassthrough: true }))
      .toEqual({ limited: false, upstream: "passthrough", rewrittenModel: Option.none() })
  })

  it("limits requests without a model: they reach the primary upstream with the sidecar's key", () => {
    for (const hasPassthrough of [false, true]) {
      expect(classify(undefined, { gatewayAliases: aliases, hasPassthrough })).toMatchObject({ limited: true, upstream: "primary" })
    }
  })
})

const joinUpstream = (base: string, path: string) => joinTo(upstreamBase(base), path)

describe("joinUpstream", () => {
  it("never doubles /v1 when the base ends with /v1", () => {
    expect(joinUpstream("https://integrate.api.nvidia.com/v1", "/v1/chat/completions"))
      .toEqual({ origin: "https://integrate.api.nvidia.com", path: "/v1/chat/completions" })
    expect(joinUpstream("https://integrate.api.nvidia.com/v1/", "/v1/models?x=1").path).toBe("/v1/models?x=1")
  })

  it("appends the path to a base without /v1", () => {
    expect(joinUpstream("http://127.0.0.1:8000", "/v1/embeddings")).toEqual({ origin: "http://127.0.0.1:8000", path: "/v1/embeddings" })
    expect(joinUpstream("http://gw.local/openai", "/v1/chat/completions").path).toBe("/openai/v1/chat/completions")
  })
})

describe("normalizePath", () => {
  it("decodes the slash of a model id in /v1/models/{id} only, and still refuses traversal after decoding", () => {
    expect(normalizePath("/v1/models/meta%2Fllama-3.1-8b-instruct")).toEqual(Either.right("/v1/models/meta/llama-3.1-8b-instruct"))
    expect(normalizePath("/v1/models/nvidia%2Fmeta%2Fllama?x=1")).toEqual(Either.right("/v1/models/nvidia/meta/llama?x=1"))
    for (const target of ["/v1/models/..%2F..%2Fadmin", "/v1/models/%2E%2E%2Fx", "/v1/chat%2Fcompletions", "/v1/models/a%5Cb"]) {
      expect(Either.isLeft(normalizePath(target)), target).toBe(true)
    }
  })

  it("collapses duplicate slashes and keeps the query", () => {
    expect(normalizePath("/v1//models/?a=b")).toEqual(Either.right("/v1/models?a=b"))
  })

  it.each(["/v1/../x", "/v1/./x", "/v1/%2e%2e/x", "/v1/%2E%2e", "/v1/a%2fb", "/v1/a%5cb", "/v1\\x", "http://evil/v1", "//evil/v1", "/v1/%zz", "*"])(
    "refuses %s",
    (target) => {
      expect(Either.isLeft(normalizePath(target))).toBe(true)
    }
  )
})

describe("headers", () => {
  it("drops hop-by-hop, Connection-listed, host, content-length, expect and x-priority on requests", () => {
    const out = requestHeaders({
      connection: "keep-alive, x-hop",
      "x-hop": "1",
      "keep-alive": "timeout=5",
      host: "sidecar",
      "content-length": "10",
      expect: "100-continue",
      "transfer-encoding": "chunked",
      upgrade: "h2c",
      "x-priority": "high",
      "proxy-authorization": "x",
      authorization: "Bearer client",
      traceparent: "00-abc",
      "content-type": "application/json",
      "x-request-id": "from-client"
    }, "req-1")
    expect(out).toEqual({ authorization: "Bearer client", traceparent: "00-abc", "content-type": "application/json", "x-request-id": "req-1" })
  })

  it("keeps content-length on responses but drops transfer-encoding", () => {
    expect(responseHeaders({ "content-length": "5", "transfer-encoding": "chunked", "x-request-id": "r" }))
      .toEqual({ "content-length": "5", "x-upstream-request-id": "r" })
  })
})

describe("toErrorResponse", () => {
  const cases: Array<[Errors.SidecarError, number, string]> = [
    [new Errors.InvalidPath({ reason: "x" }), 400, "invalid_path"],
    [new Errors.InvalidJson({ reason: "x" }), 400, "invalid_json"],
    [new Errors.BodyTooLarge({ limitBytes: 1 }), 413, "body_too_large"],
    [new Errors.RouteNotFound({ method: "GET", path: "/x" }), 404, "not_found"],
    [new Errors.UpstreamFailed({ reason: "ECONNREFUSED" }), 502, "bad_gateway"],
    [new Errors.UpstreamTimeout({ phase: "headers" }), 504, "upstream_timeout"],
    [new Errors.RateLimited({ reason: "queue_timeout", retryAfterMs: 2500 }), 429, "rate_limit_exceeded"],
    [new Errors.QueueFull({ capacity: 3 }), 503, "queue_full"],
    [new Errors.Evicted(), 503, "queue_full"],
    [new Errors.ShuttingDown(), 503, "shutting_down"],
    [new Errors.AdminUnauthorized({ reason: "missing_token" }), 401, "unauthorized"],
    [new Errors.AdminForbidden({ reason: "wrong_token" }), 403, "forbidden"],
    [new Errors.InvalidPatch({ field: "rate_rpm", reason: "x" }), 400, "invalid_config"]
  ]
  it.each(cases)("maps %s to its status with an OpenAI error body", (error, status, code) => {
    const r = toErrorResponse(error)
    expect(r.status).toBe(status)
    const body = JSON.parse(r.body) as { error: { code: string; type: string; message: string } }
    expect(body.error.code).toBe(code)
    expect(typeof body.error.message).toBe("string")
    expect(typeof body.error.type).toBe("string")
    // Resending the same request cannot help on a 4xx of ours; it can on 429/5xx.
    expect(r.headers["x-should-retry"]).toBe(status < 500 && status !== 429 ? "false" : undefined)
  })

  it("gives our own 429 and 503 Retry-After and retry-after-ms", () => {
    const limited = toErrorResponse(new Errors.RateLimited({ reason: "low_priority_timeout", retryAfterMs: 2500 }))
    expect(limited.headers["retry-after"]).toBe("3")
    expect(limited.headers["retry-after-ms"]).toBe("2500")
    expect(toErrorResponse(new Errors.QueueFull({ capacity: 1 })).headers["retry-after"]).toBe("1")
    expect(toErrorResponse(new Errors.ShuttingDown()).headers["retry-after-ms"]).toBe("1000")
  })
})
