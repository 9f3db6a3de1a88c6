import { afterEach, describe, expect, it, vi } from "vitest"
import { defaultMaxBytes, makeUsageTap, type Observed } from "../src/Observability/Usage.js"

const MODEL = "deepseek-ai/deepseek-v4-pro"

const chunk = (fields: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: MODEL, ...fields })}\n\n`

const delta = (content: string) => chunk({ choices: [{ index: 0, delta: { content }, finish_reason: null }], usage: null })

/** An OpenAI stream with `stream_options.include_usage`: `usage: null` everywhere, the object last. */
const openAiStream = [
  ": keep-alive comment\n\n",
  chunk({ choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }], usage: null }),
  delta("The body may say \"usage\": {\"prompt_tokens\": 999} and \"model\": \"fake\""),
  delta(" and non-ASCII: żółć 日本語 🚀"),
  chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage: null }),
  chunk({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 34, total_tokens: 46 } }),
  "data: [DONE]\n\n"
].join("")

const expected: Observed = { usage: { promptTokens: 12, completionTokens: 34 }, model: MODEL }

const sse = "text/event-stream; charset=utf-8"

const run = (contentType: string | undefined, pieces: ReadonlyArray<Buffer | string>, encoding?: string, maxBytes?: number): Observed => {
  const tap = makeUsageTap(contentType, encoding, maxBytes === undefined ? {} : { maxBytes })
  for (const piece of pieces) tap.push(typeof piece === "string" ? Buffer.from(piece) : piece)
  return tap.result()
}

/** `bytes` cut at the given offsets. */
const cut = (bytes: Buffer, at: ReadonlyArray<number>): Array<Buffer> => {
  const bounds = [0, ...at, bytes.length]
  return bounds.slice(1).map((end, i) => bytes.subarray(bounds[i], end))
}

/** Deterministic pseudo-random offsets (xorshift), sorted. */
const randomCuts = (seed: number, length: number, count: number): Array<number> => {
  let x = seed
  const out = new Set<number>()
  while (out.size < count) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out.add(1 + ((x >>> 0) % (length - 1)))
  }
  return [...out].sort((a, b) => a - b)
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe("usage tap, SSE", () => {
  const bytes = Buffer.from(openAiStream)

  it("reads usage and model from a whole stream", () => {
    expect(run(sse, [bytes])).toEqual(expected)
  })

  it("reads the same whatever byte the stream is split at", () => {
    for (let i = 1; i < bytes.length; i++) expect(run(sse, cut(bytes, [i])), `split at ${i}`).toEqual(expected)
  })

  it("reads the same from one byte per chunk and from random many-way splits", () => {
    expect(run(sse, cut(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)))).toEqual(expected)
    for (let seed = 1; seed <= 200; seed++) {
      expect(run(sse, cut(bytes, randomCuts(seed, bytes.length, 1 + (seed % 12)))), `seed ${seed}`).toEqual(expected)
    }
  })

  it("reads CRLF line ends", () => {
    expect(run(sse, [openAiStream.replaceAll("\n", "\r\n")])).toEqual(expected)
    const crlf = Buffer.from(openAiStream.replaceAll("\n", "\r\n"))
    for (let i = 1; i < crlf.length; i += 7) expect(run(sse, cut(crlf, [i])), `split at ${i}`).toEqual(expected)
  })

  it("reads the same with empty chunks in between", () => {
    const pieces = cut(Buffer.from(openAiStream), randomCuts(5, openAiStream.length, 30)).flatMap((p) => [Buffer.alloc(0), p, Buffer.alloc(0)])
    expect(run(sse, pieces)).toEqual(expected)
  })

  it("never changes the bytes it is given", () => {
    const pieces = cut(Buffer.from(openAiStream), randomCuts(7, openAiStream.length, 20))
    const copies = pieces.map((p) => Buffer.from(p))
    run(sse, pieces)
    expect(pieces).toEqual(copies)
  })

  it("reports the model but no usage when the stream carries none", () => {
    const stream = [delta("Hi"), chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }), "data: [DONE]\n\n"].join("")
    expect(run(sse, [stream])).toEqual({ usage: undefined, model: MODEL })
  })

  it("keeps the last usage when every chunk carries a cumulative one (vLLM continuous usage)", () => {
    const stream = [1, 2, 3].map((n) => chunk({ choices: [], usage: { prompt_tokens: 5, completion_tokens: n } })).join("")
    expect(run(sse, [stream])).toEqual({ usage: { promptTokens: 5, completionTokens: 3 }, model: MODEL })
  })

  it("takes usage from the usage chunk even when the stream names no model", () => {
    const stream = 'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\ndata: [DONE]\n\n'
    expect(run(sse, [stream])).toEqual({ usage: { promptTokens: 1, completionTokens: 2 }, model: undefined })
  })

  it("reads only the top-level usage, not one nested in the payload", () => {
    const stream = chunk({ choices: [], usage: null, extra: { usage: { prompt_tokens: 999, completion_tokens: 999 } } })
    expect(run(sse, [stream]).usage).toBeUndefined()
  })

  it("reports no usage for malformed or invalid usage lines", () => {
    const usageLine = chunk({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 34 } })
    expect(run(sse, [usageLine.slice(0, usageLine.length - 10) + "\n\n"]).usage).toBeUndefined()
    for (const usage of [{ prompt_tokens: -1, completion_tokens: 3 }, { prompt_tokens: "12", completion_tokens: 3 }, { prompt_tokens: 1.5 }, {}]) {
      expect(run(sse, [chunk({ choices: [], usage })]).usage, JSON.stringify(usage)).toBeUndefined()
    }
    expect(run(sse, ['data: {"usage": {"prompt_tokens": 3}, "model": "m"}\n\n'])).toEqual({ usage: { promptTokens: 3, completionTokens: 0 }, model: "m" })
  })

  it("ignores usage outside a data field and on a last line without its line end", () => {
    expect(run(sse, ['event: x\nid: {"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n']).usage).toBeUndefined()
    expect(run(sse, [chunk({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 1 } }).trimEnd()]).usage).toBeUndefined()
  })

  it("drops a line longer than its bound and still reads the lines around it", () => {
    const huge = `data: ${JSON.stringify({ model: MODEL, usage: { prompt_tokens: 999, completion_tokens: 999 }, pad: "x".repeat(4000) })}\n\n`
    const usage = chunk({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 34 } })
    const everyByte = (b: Buffer) => cut(b, Array.from({ length: b.length - 1 }, (_, i) => i + 1))
    // Bound 1 KiB: the huge line (a later usage, which would otherwise win) is skipped.
    for (const bytes of [Buffer.from(usage + huge), Buffer.from(huge + usage)]) {
      expect(run(sse, [bytes], undefined, 1024)).toEqual(expected)
      expect(run(sse, cut(bytes, randomCuts(3, bytes.length, 40)), undefined, 1024)).toEqual(expected)
      // Memory: what is carried between chunks (joined when its line ends) stays within the bound.
      const concat = vi.spyOn(Buffer, "concat")
      expect(run(sse, everyByte(bytes), undefined, 1024)).toEqual(expected)
      expect(Math.max(...concat.mock.results.map((r) => (r.value as Buffer).length))).toBeLessThanOrEqual(1024 + 1)
      concat.mockRestore()
    }
    // With the default bound the same line is read.
    expect(run(sse, [usage + huge]).usage).toEqual({ promptTokens: 999, completionTokens: 999 })
    // The rest of a skipped line is skipped too, even where it looks like a line of its own.
    const tail = 'data: {"usage":{"prompt_tokens":999,"completion_tokens":999}}\n\n'
    const comment = Buffer.from(`${usage}: ${"x".repeat(2000)}${tail}`)
    expect(run(sse, cut(comment, [comment.length - tail.length]), undefined, 1024)).toEqual(expected)
    expect(run(sse, cut(comment, [comment.length - tail.length])).usage).toEqual(expected.usage)
  })

  it("keeps the first model named", () => {
    const stream = chunk({ choices: [], usage: null }) + chunk({ model: "other", choices: [], usage: { prompt_tokens: 12, completion_tokens: 34 } })
    expect(run(sse, [stream])).toEqual(expected)
  })

  it("parses only the first model line and the usage line, however long the stream", () => {
    const nested = chunk({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 34 }, extra: { usage: { prompt_tokens: 1 } } })
    const stream = Buffer.from([...Array.from({ length: 500 }, (_, i) => delta(`token ${i} `)), nested].join(""))
    const parse = vi.spyOn(JSON, "parse")
    expect(run(sse, cut(stream, randomCuts(11, stream.length, 300)))).toEqual(expected)
    expect(parse).toHaveBeenCalledTimes(2)
  })
})

describe("usage tap, JSON", () => {
  const body = JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion",
    model: MODEL,
    choices: [{ index: 0, message: { role: "assistant", content: "\"usage\": {\"prompt_tokens\": 1} żółć" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 12, completion_tokens: 34, total_tokens: 46 }
  })

  it("reads usage and model from a body in any number of pieces", () => {
    const bytes = Buffer.from(body)
    expect(run("application/json", [bytes])).toEqual(expected)
    for (let i = 1; i < bytes.length; i++) expect(run("application/json; charset=utf-8", cut(bytes, [i])), `split at ${i}`).toEqual(expected)
    expect(run("application/json", cut(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)))).toEqual(expected)
  })

  it("reads embeddings usage (prompt tokens only) and +json media types", () => {
    const embeddings = JSON.stringify({ object: "list", data: [{ embedding: [0.1, 0.2] }], model: "nvidia/nv-embed", usage: { prompt_tokens: 8, total_tokens: 8 } })
    expect(run("application/vnd.api+json", [embeddings])).toEqual({ usage: { promptTokens: 8, completionTokens: 0 }, model: "nvidia/nv-embed" })
  })

  it("reports nothing for a body without usage, a malformed body or a non-object body", () => {
    expect(run("application/json", [JSON.stringify({ error: { message: "x" } })])).toEqual({ usage: undefined, model: undefined })
    expect(run("application/json", [JSON.stringify({ model: MODEL, usage: null })])).toEqual({ usage: undefined, model: MODEL })
    expect(run("application/json", [body.slice(0, -1)])).toEqual({ usage: undefined, model: undefined })
    expect(run("application/json", ["[1,2]"])).toEqual({ usage: undefined, model: undefined })
    expect(run("application/json", [])).toEqual({ usage: undefined, model: undefined })
  })

  it("gives up on a body over its bound (default 1 MiB) and reads one at the bound", () => {
    const padded = (size: number) => {
      const base = JSON.stringify({ model: MODEL, usage: { prompt_tokens: 12, completion_tokens: 34 }, pad: "" })
      return Buffer.from(base.replace('"pad":""', `"pad":"${"x".repeat(size - base.length)}"`))
    }
    const atBound = padded(defaultMaxBytes)
    expect(atBound.length).toBe(defaultMaxBytes)
    expect(run("application/json", cut(atBound, randomCuts(5, atBound.length, 16)))).toEqual(expected)
    const over = padded(defaultMaxBytes + 1)
    expect(run("application/json", cut(over, randomCuts(5, over.length, 16)))).toEqual({ usage: undefined, model: undefined })
    expect(run("application/json", [over.subarray(0, 100), over.subarray(100)], undefined, 100)).toEqual({ usage: undefined, model: undefined })
  })

  it("parses once, at the end, and answers the same when asked again", () => {
    const parse = vi.spyOn(JSON, "parse")
    const tap = makeUsageTap("application/json")
    for (const piece of cut(Buffer.from(body), [10, 50, 100])) tap.push(piece)
    expect(parse).not.toHaveBeenCalled()
    expect(tap.result()).toEqual(expected)
    expect(tap.result()).toEqual(expected)
    expect(parse).toHaveBeenCalledTimes(1)
  })
})

describe("usage tap, what it reads at all", () => {
  it("reads nothing from other media types or encoded bodies", () => {
    const usageBody = JSON.stringify({ model: MODEL, usage: { prompt_tokens: 1, completion_tokens: 2 } })
    expect(run("text/plain", [usageBody])).toEqual({ usage: undefined, model: undefined })
    expect(run(undefined, [usageBody])).toEqual({ usage: undefined, model: undefined })
    expect(run("application/json", [usageBody], "gzip")).toEqual({ usage: undefined, model: undefined })
    expect(run(sse, [openAiStream], "br")).toEqual({ usage: undefined, model: undefined })
    expect(run("application/json", [usageBody], "identity").usage).toEqual({ promptTokens: 1, completionTokens: 2 })
    expect(run("TEXT/EVENT-STREAM", [openAiStream])).toEqual(expected)
  })

  it("takes the first value of a repeated content-type header", () => {
    const tap = makeUsageTap(["text/event-stream", "application/json"])
    tap.push(Buffer.from(openAiStream))
    expect(tap.result()).toEqual(expected)
  })
})
