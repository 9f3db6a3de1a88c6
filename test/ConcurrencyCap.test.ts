// The cap classifier and the per-model in-flight learner, with plain millisecond times.
import { describe, expect, it } from "vitest"
import { concurrencySignal, ModelConcurrency, params } from "../src/Admission/Laws/ConcurrencyCap.js"

describe("concurrencySignal", () => {
  it("recognises NIM's worker limit and reads N of N/N", () => {
    expect(concurrencySignal("Worker local total request limit reached (32/32)")).toEqual({ limit: 32 })
    expect(concurrencySignal("worker local total request limit reached (4/4)")).toEqual({ limit: 4 })
    expect(concurrencySignal('{"error":{"message":"Worker local total request limit reached (31/32)","code":429}}')).toEqual({ limit: 32 })
  })

  it("recognises other concurrency wordings, case-insensitive, with or without N", () => {
    expect(concurrencySignal("Too many concurrent requests")).toEqual({ limit: undefined })
    expect(concurrencySignal("TOO MANY CONCURRENT REQUESTS for this model")).toEqual({ limit: undefined })
    expect(concurrencySignal("Concurrency limit exceeded (8/8)")).toEqual({ limit: 8 })
    expect(concurrencySignal("concurrent request limit: 16/16 in use")).toEqual({ limit: 16 })
    expect(concurrencySignal("Maximum concurrency reached")).toEqual({ limit: undefined })
  })

  it("leaves rate-limit bodies to the rate law", () => {
    expect(concurrencySignal("Rate limit exceeded")).toBeUndefined()
    expect(concurrencySignal("Daily request limit reached (1000/1000)")).toBeUndefined()
    expect(concurrencySignal("You exceeded your current quota")).toBeUndefined()
    expect(concurrencySignal("")).toBeUndefined()
  })

  it("ignores a stated limit of 0", () => {
    expect(concurrencySignal("Worker local total request limit reached (0/0)")).toEqual({ limit: undefined })
  })
})

describe("ModelConcurrency", () => {
  const T = 1_000_000

  it("holds the stated N: one call over it gives exactly N", () => {
    const caps = new ModelConcurrency(64)
    expect(caps.limitFor("m")).toBeUndefined()
    expect(caps.onCapSignal("m", 5, 4, T)).toBe(4)
    expect(caps.limitFor("m")).toBe(4)
  })

  it("never goes above what we had in flight less the refused call", () => {
    const caps = new ModelConcurrency(64)
    expect(caps.onCapSignal("m", 3, 32, T)).toBe(2) // others share those workers
    expect(caps.onCapSignal("n", 33, 32, T)).toBe(32)
  })

  it("without N, learns our in-flight count less one, at least 1, at most the max", () => {
    const caps = new ModelConcurrency(8)
    expect(caps.onCapSignal("a", 5, undefined, T)).toBe(4)
    expect(caps.onCapSignal("b", 1, undefined, T)).toBe(1)
    expect(caps.onCapSignal("c", 2, undefined, T)).toBe(1)
    expect(caps.onCapSignal("d", 20, undefined, T)).toBe(8)
    expect(caps.onCapSignal("e", 20, 12, T)).toBe(8)
  })

  it("probes one above an inferred limit only after a quiet minute, and only when the limit is reached", () => {
    const caps = new ModelConcurrency(64)
    caps.onCapSignal("m", 5, undefined, T)
    caps.onDispatch("m", 4, T + params.quietMs - 1)
    expect(caps.limitFor("m")).toBe(4)
    caps.onDispatch("m", 3, T + params.quietMs)
    expect(caps.limitFor("m")).toBe(4)
    caps.onDispatch("m", 4, T + params.quietMs)
    expect(caps.limitFor("m")).toBe(5)
    // The quiet period starts again at the probe.
    caps.onDispatch("m", 5, T + 2 * params.quietMs - 1)
    expect(caps.limitFor("m")).toBe(5)
    caps.onDispatch("m", 5, T + 2 * params.quietMs)
    expect(caps.limitFor("m")).toBe(6)
  })

  it("believes a stated N for five minutes before probing above it", () => {
    const caps = new ModelConcurrency(64)
    caps.onCapSignal("m", 5, 4, T)
    caps.onDispatch("m", 4, T + params.statedQuietMs - 1)
    expect(caps.limitFor("m")).toBe(4)
    caps.onDispatch("m", 4, T + params.statedQuietMs)
    expect(caps.limitFor("m")).toBe(5)
  })

  it("does not probe above the max", () => {
    const caps = new ModelConcurrency(4)
    caps.onCapSignal("m", 5, undefined, T)
    caps.onDispatch("m", 4, T + params.quietMs)
    expect(caps.limitFor("m")).toBe(4)
  })

  it("a new cap signal after a probe sets the limit back", () => {
    const caps = new ModelConcurrency(64)
    caps.onCapSignal("m", 5, 4, T)
    caps.onDispatch("m", 4, T + params.statedQuietMs)
    expect(caps.onCapSignal("m", 5, 4, T + params.statedQuietMs + 1)).toBe(4)
    expect(caps.snapshot()).toEqual({ m: 4 })
  })

  it("keeps at most 256 models, forgetting the least recently used", () => {
    const caps = new ModelConcurrency(64)
    for (let i = 0; i < params.maxModels; i++) caps.onCapSignal(`m${i}`, 3, undefined, T)
    caps.onSuccess("m0") // m0 is fresh again; m1 is now the oldest
    caps.onCapSignal("new", 3, undefined, T)
    expect(Object.keys(caps.snapshot())).toHaveLength(params.maxModels)
    expect(caps.limitFor("m0")).toBe(2)
    expect(caps.limitFor("m1")).toBeUndefined()
    expect(caps.limitFor("new")).toBe(2)
  })
})
