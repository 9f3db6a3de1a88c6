// ADR-009 as a ControlLaw: test/Retreat.test.ts ported from ratios and the bucket's fiber to
// plain `record` / `evaluate` calls at millisecond times. The bucket's concurrency test stays
// with the bucket: the law is synchronous and owned by it.
import { describe, expect, it } from "vitest"
import { Adr009 } from "../src/Admission/Laws/Adr009.js"

/** 40 rpm base: one retreat step is 40 -> 30 -> 22.5 -> ... */
const base40 = () => new Adr009(40)

const recordMany = (law: Adr009, at: number, ok: number, throttled: number) => {
  for (let i = 0; i < ok; i++) law.record("ok", at)
  for (let i = 0; i < throttled; i++) law.record("throttled", at)
}

const state = (law: Adr009) => ({ mode: law.mode, rpm: law.effectiveRpm })

/** Evaluates every 5 s step in (from, to], as the bucket's fiber does, and returns the state at `to`. */
const stepTo = (law: Adr009, from: number, to: number) => {
  for (let at = from + 5_000; at <= to; at += 5_000) law.evaluate(at)
  return state(law)
}

describe("Adr009.evaluate", () => {
  it("enters retreat at 5 % 429s with the rate at 0.75 x base", () => {
    const law = base40()
    recordMany(law, 1_000, 95, 5)
    expect(law.evaluate(5_000)).toEqual({ from: "normal", to: "retreat", effectiveRpm: 30, reason: "429 share 5.0 % >= 5 %" })
    expect({ ...state(law), lastDecreaseAt: law.lastDecreaseAt }).toEqual({ mode: "retreat", rpm: 30, lastDecreaseAt: 5_000 })
  })

  it("stays normal just under 5 % 429s", () => {
    const law = base40()
    recordMany(law, 1_000, 951, 49)
    expect(law.evaluate(5_000)).toBeUndefined()
    expect(state(law)).toEqual({ mode: "normal", rpm: 40 })
  })

  it("keeps decreasing in retreat while 429s are at 10 % or more, holds between 5 and 10 %", () => {
    const deepening = base40()
    recordMany(deepening, 1_000, 90, 10)
    expect(stepTo(deepening, 0, 10_000)).toEqual({ mode: "retreat", rpm: 22.5 })

    const holding = base40()
    recordMany(holding, 1_000, 901, 99)
    expect(stepTo(holding, 0, 10_000)).toEqual({ mode: "retreat", rpm: 30 })
  })

  it("lowers the rate only once per step however many 429s arrive", () => {
    const law = base40()
    recordMany(law, 1_000, 0, 1000)
    law.evaluate(5_000)
    recordMany(law, 6_000, 0, 1000)
    expect(state(law)).toEqual({ mode: "retreat", rpm: 30 })
    law.evaluate(10_000)
    expect(state(law)).toEqual({ mode: "retreat", rpm: 22.5 })
  })

  it("keeps lowering each step while 429s stay at 10 %", () => {
    const law = base40()
    recordMany(law, 1_000, 90, 10)
    for (const [at, rpm] of [[5_000, 30], [10_000, 22.5], [15_000, 16.875]] as const) {
      law.evaluate(at)
      expect(state(law), `at ${at} ms`).toEqual({ mode: "retreat", rpm })
    }
  })

  it("judges the last 60 s: 429s of second 1 count until 61 s", () => {
    const at = (ms: number) => {
      const law = base40()
      recordMany(law, 1_000, 0, 10)
      law.evaluate(5_000)
      law.evaluate(ms)
      return state(law)
    }
    expect(at(60_999)).toEqual({ mode: "retreat", rpm: 22.5 })
    expect(at(61_000)).toEqual({ mode: "retreat", rpm: 30 })
  })

  it("never lowers the rate below 5 rpm", () => {
    // 100 % 429s stay in the 60 s window until 61 s: every step lowers the rate.
    const law = base40()
    recordMany(law, 1_000, 0, 100)
    expect(stepTo(law, 0, 35_000).rpm).toBeCloseTo(40 * 0.75 ** 7, 9)
    expect(stepTo(law, 35_000, 40_000)).toEqual({ mode: "retreat", rpm: 5 }) // an eighth step would be 4.0
    expect(stepTo(law, 40_000, 60_000)).toEqual({ mode: "retreat", rpm: 5 })
  })

  it("moves to recover 120 s after the last decrease when the long window is under 2 %, adding 2 rpm per step", () => {
    const law = base40()
    recordMany(law, 1_000, 95, 5)
    law.evaluate(5_000) // last decrease
    expect(stepTo(law, 5_000, 120_000)).toEqual({ mode: "retreat", rpm: 30 })
    expect(law.evaluate(124_999)).toBeUndefined()
    expect(state(law)).toEqual({ mode: "retreat", rpm: 30 })
    expect(law.evaluate(125_000)).toMatchObject({ from: "retreat", to: "recover", effectiveRpm: 32 })
    const expected = [[130_000, "recover", 34], [135_000, "recover", 36], [140_000, "recover", 38], [145_000, "normal", 40], [150_000, "normal", 40]] as const
    for (const [at, mode, rpm] of expected) {
      law.evaluate(at)
      expect(state(law), `at ${at} ms`).toEqual({ mode, rpm })
    }
  })

  it("waits for 2 % 429s to leave the 120 s window before recovering", () => {
    const law = base40()
    recordMany(law, 1_000, 95, 5)
    law.evaluate(5_000)
    recordMany(law, 70_000, 98, 2) // 2 % stays in the 120 s window until 190 s
    expect(stepTo(law, 5_000, 185_000)).toEqual({ mode: "retreat", rpm: 30 })
    expect(stepTo(law, 185_000, 190_000)).toEqual({ mode: "recover", rpm: 32 })
  })

  it("does not recover at 2 % 429s in the long window, does just under", () => {
    const retreated = (oks: number) => {
      const law = base40()
      recordMany(law, 1_000, 0, 10)
      law.evaluate(5_000)
      recordMany(law, 10_000, oks, 10) // still in the 120 s window at 125 s; the 1 s answers are not
      return law
    }
    expect(retreated(490).evaluate(125_000)).toBeUndefined() // 10 of 500
    expect(retreated(491).evaluate(125_000)).toMatchObject({ from: "retreat", to: "recover" }) // 10 of 501
  })

  it("re-enters retreat on a 429 burst during recover", () => {
    const law = base40()
    recordMany(law, 1_000, 95, 5)
    law.evaluate(5_000)
    law.evaluate(125_000)
    expect(state(law)).toEqual({ mode: "recover", rpm: 32 })
    recordMany(law, 126_000, 0, 10)
    expect(law.evaluate(130_000)).toMatchObject({ from: "recover", to: "retreat", effectiveRpm: 24 })
  })

  it("stays in recover just under 5 % 429s", () => {
    const law = base40()
    recordMany(law, 1_000, 95, 5)
    law.evaluate(5_000)
    law.evaluate(125_000)
    recordMany(law, 126_000, 951, 49)
    law.evaluate(130_000)
    expect(state(law)).toEqual({ mode: "recover", rpm: 34 })
  })

  it("rebases a normal rate to the new base and caps a retreated one", () => {
    const normal = base40()
    normal.rebase(60)
    expect(normal.effectiveRpm).toBe(60)

    const up = base40()
    recordMany(up, 1_000, 95, 5)
    up.evaluate(5_000)
    up.rebase(60)
    expect(up.effectiveRpm).toBe(30)

    const down = base40()
    recordMany(down, 1_000, 95, 5)
    down.evaluate(5_000)
    down.rebase(20)
    expect(down.effectiveRpm).toBe(20)
  })

  it("shows its state and leaves the bucket alone", () => {
    const law = base40()
    recordMany(law, 1_000, 90, 10)
    law.evaluate(5_000)
    expect(law.view(5_000)).toEqual({ law: "adr009", mode: "retreat", baseRpm: 40, effectiveRpm: 30, rate429: 0.1, quotaEstimateRpm: null })
    expect(law.burst).toBe(Infinity)
    expect(law.dispatchAt(5_000)).toBe(5_000)
  })
})
