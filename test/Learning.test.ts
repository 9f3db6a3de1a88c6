// The learning law with plain millisecond times, each threshold from both sides.
import { describe, expect, it } from "vitest"
import { Learning, params } from "../src/Admission/Laws/Learning.js"
import { calendarPossible, ShapeVote } from "../src/Admission/Laws/QuotaShape.js"
import { SendWindow } from "../src/Admission/Laws/SendWindow.js"

/** A calendar-minute boundary, so minutes in the tests start at T + k * 60 s. */
const T = 60_000 * 30_000_000

const sendOk = (law: Learning, at: number, latency = 100) => {
  law.dispatched(at)
  law.record("ok", at + latency, undefined, at)
}
const sendRefused = (law: Learning, at: number, latency = 50) => {
  law.dispatched(at)
  law.record("throttled", at + latency, undefined, at)
}
/** `n` ok calls from `from`, `every` ms apart. */
const okCalls = (law: Learning, from: number, n: number, every: number) => {
  for (let i = 0; i < n; i++) sendOk(law, from + i * every)
}

/** Busy from T, 30 calls accepted in 55 s, the 31st refused at `refusedAt` (answer 50 ms later). */
const learned30 = (refusedAt = T + 57_000, base = 60) => {
  const law = new Learning(base)
  okCalls(law, T, 30, 1_900)
  sendRefused(law, refusedAt)
  return law
}

describe("Learning: parameters", () => {
  it("are the ones sim/README.md explains and its table was made with", () => {
    expect(params).toEqual({
      windowMs: 60_000,
      capWindowMs: 60_250,
      minRpm: 1,
      holdMs: 75_000,
      probeRpm: 1,
      busyShare: 0.8,
      longStreak: 3,
      retestAbove: 0.7,
      firmAfterMs: 50_000,
      maxPauseMs: 15_000
    })
  })
})

describe("Learning: the first 429", () => {
  it("learns the count the upstream allowed in the last 60 s and holds it, one token at a time", () => {
    const law = learned30()
    expect(law.view(T + 57_050)).toEqual({ law: "learning", mode: "hold", baseRpm: 60, effectiveRpm: 30, rate429: 1 / 31, quotaEstimateRpm: 30 })
    expect(law.burst).toBe(1)
    expect(law.evaluate(T + 60_000)).toMatchObject({ from: "open", to: "hold", effectiveRpm: 30 })
    expect(law.evaluate(T + 65_000)).toBeUndefined()
  })

  it("never learns more than the configured rate", () => {
    const law = learned30(T + 57_000, 20)
    expect(law.effectiveRpm).toBe(20)
    expect(law.view(T + 57_050).quotaEstimateRpm).toBe(20)
  })

  it("counts out a call a concurrency cap refused", () => {
    const law = new Learning(60)
    okCalls(law, T, 30, 1_900)
    law.dispatched(T + 56_000)
    law.uncounted(T + 56_000)
    sendRefused(law, T + 57_000)
    expect(law.effectiveRpm).toBe(30)
  })

  it("counts a refused call out, and refines on the 429s of calls sent with it", () => {
    const law = new Learning(60)
    okCalls(law, T, 30, 1_900)
    law.dispatched(T + 57_000)
    law.dispatched(T + 57_000)
    law.record("throttled", T + 57_050, undefined, T + 57_000) // the other one still counts: 31
    expect(law.effectiveRpm).toBe(31)
    law.record("throttled", T + 57_060, undefined, T + 57_000)
    expect(law.effectiveRpm).toBe(30)
    expect(law.evaluate(T + 60_000)?.reason).toContain("(streak 1)")
  })
})

describe("Learning: the 60 s count", () => {
  it("lets the next call go when the oldest counted call is 60.25 s old (100 ms slots), not before", () => {
    const law = learned30()
    // The oldest call went at T: its slot ends at T + 100 ms.
    const free = T + 100 + params.capWindowMs
    expect(law.dispatchAt(T + 57_100)).toBe(free)
    expect(law.dispatchAt(free - 1)).toBe(free)
    expect(law.dispatchAt(free)).toBe(free)
  })

  it("caps an open law at the configured rate per 60.25 s and then stops the burst", () => {
    const law = new Learning(40)
    expect(law.burst).toBe(Infinity)
    for (let i = 0; i < 39; i++) law.dispatched(T + i)
    expect(law.dispatchAt(T + 100)).toBe(T + 100)
    expect(law.burst).toBe(Infinity)
    law.dispatched(T + 39)
    expect(law.dispatchAt(T + 100)).toBe(T + 100 + params.capWindowMs)
    expect(law.burst).toBe(1)
  })

  it("gives the configured burst back after a quiet minute", () => {
    const law = new Learning(2)
    law.dispatched(T)
    law.dispatched(T + 1)
    law.dispatchAt(T + 2)
    expect(law.burst).toBe(1)
    law.dispatched(T + 1 + params.windowMs) // exactly a minute later: not quiet yet
    expect(law.burst).toBe(1)
    law.dispatched(T + 2 + 2 * params.windowMs)
    expect(law.burst).toBe(Infinity)
  })
})

describe("Learning: firm or unsure", () => {
  // 30 calls in the first 49.4 s, the 31st refused `busyMs` after the first call.
  const refusedAfter = (busyMs: number) => {
    const law = new Learning(60)
    okCalls(law, T, 30, 1_700)
    sendRefused(law, T + busyMs - 50)
    sendOk(law, T + busyMs + 1_000) // sent after the 429: the streak is over
    return law
  }

  it("re-tests at once an estimate from a window busy for less than 50 s", () => {
    const law = refusedAfter(params.firmAfterMs - 1)
    expect(law.evaluate(T + 55_000)).toMatchObject({ from: "open", to: "probe", effectiveRpm: 31 })
  })

  it("holds an estimate from a window busy for 50 s", () => {
    const law = refusedAfter(params.firmAfterMs)
    expect(law.evaluate(T + 55_000)).toMatchObject({ from: "open", to: "hold", effectiveRpm: 30 })
  })
})

describe("Learning: probing", () => {
  /** Learned 30 at T + 57.05 s, then ok calls every `every` ms until `until`. */
  const busyUntil = (until: number, every = 2_000) => {
    const law = learned30()
    for (let at = T + 60_000; at <= until; at += every) sendOk(law, at)
    return law
  }
  const cut = T + 57_050

  it("holds for 75 s after the last cut, then probes one above", () => {
    const law = busyUntil(cut + params.holdMs)
    law.evaluate(cut + params.holdMs - 1)
    expect(law.mode).toBe("hold")
    expect(law.evaluate(cut + params.holdMs)).toMatchObject({ from: "hold", to: "probe", effectiveRpm: 31 })
  })

  it("probes only while the last 20 s held 80 % of the level's calls", () => {
    // 80 % of 30 rpm over 20 s is 8 calls.
    const with8 = learned30()
    const at = cut + params.holdMs
    for (let i = 0; i < 8; i++) sendOk(with8, at - 19_000 + i * 2_000)
    expect(with8.evaluate(at)?.to).toBe("probe")

    const with7 = learned30()
    for (let i = 0; i < 7; i++) sendOk(with7, at - 19_000 + i * 2_000)
    expect(with7.evaluate(at)?.to).toBe("hold")
    expect(with7.effectiveRpm).toBe(30)
  })

  it("doubles each step and opens at the configured rate", () => {
    const start = cut + params.holdMs
    const law = busyUntil(start + 30_000, 500)
    const levels = [0, 5_000, 10_000, 15_000, 20_000].map((dt) => {
      law.evaluate(start + dt)
      return [law.mode, law.effectiveRpm]
    })
    expect(levels).toEqual([["probe", 31], ["probe", 33], ["probe", 37], ["probe", 45], ["open", 60]])
    expect(law.view(start + 20_000).quotaEstimateRpm).toBe(30)
  })

  it("a 429 while probing learns the count again", () => {
    const start = cut + params.holdMs
    const law = busyUntil(start, 2_000)
    law.evaluate(start)
    expect(law.effectiveRpm).toBe(31)
    sendRefused(law, start + 1_000)
    expect(law.mode).toBe("hold")
    expect(law.effectiveRpm).toBeLessThanOrEqual(31)
  })

  it("rebases: the level follows a lower configured rate and opens at it", () => {
    const law = learned30()
    law.rebase(20)
    expect([law.mode, law.effectiveRpm]).toEqual(["open", 20])
    const held = learned30()
    held.rebase(90)
    expect([held.mode, held.effectiveRpm]).toEqual(["hold", 30])
  })
})

describe("Learning: streaks", () => {
  // Open at 40 with 40 calls counted: `early` sent at T, the rest at T + 10 s. Refusals at
  // T + 55 s and T + 56 s, then a third at T + 60.15 s, when the `early` ones have left.
  const streak = (early: number, third = true) => {
    const law = new Learning(40)
    for (let i = 0; i < early; i++) sendOk(law, T)
    for (let i = early; i < 40; i++) sendOk(law, T + 10_000)
    sendRefused(law, T + 55_000)
    sendRefused(law, T + 56_000)
    if (third) sendRefused(law, T + 60_150)
    sendOk(law, T + 61_000)
    return law
  }

  it("a streak of 3 that left at least 70 % of the level is re-tested from that level", () => {
    const law = streak(12) // 28 left: 0.7 x 40
    expect(law.effectiveRpm).toBe(28)
    law.evaluate(T + 65_000)
    expect([law.mode, law.effectiveRpm]).toEqual(["open", 40])
  })

  it("a deeper streak is believed", () => {
    const law = streak(13) // 27 left
    law.evaluate(T + 65_000)
    expect([law.mode, law.effectiveRpm]).toEqual(["hold", 27])
  })

  it("a streak of 2 is believed", () => {
    const law = streak(12, false)
    law.evaluate(T + 65_000)
    expect([law.mode, law.effectiveRpm]).toEqual(["hold", 40])
  })

  it("an answer to a call sent before the last 429 does not end the streak", () => {
    const law = new Learning(60)
    okCalls(law, T, 30, 1_900)
    law.dispatched(T + 56_900) // answered after the 429 below
    sendRefused(law, T + 57_000)
    law.record("ok", T + 57_500, undefined, T + 56_900)
    sendRefused(law, T + 58_000)
    expect(law.evaluate(T + 60_000)?.reason).toContain("(streak 2)")
  })

  it("a second 429 in a row waits for the next calendar minute when a calendar quota could explain the first", () => {
    // 5 calls in the minute before, 25 in this one: a calendar minute of 25 fits.
    const law = new Learning(60)
    okCalls(law, T + 50_000, 5, 1_000)
    okCalls(law, T + 60_000, 25, 1_000)
    sendRefused(law, T + 100_000)
    sendRefused(law, T + 101_000)
    // The 60 s count alone would let a call go at T + 110.35 s.
    expect(law.dispatchAt(T + 101_100)).toBe(T + 120_000)
    expect(calendarPossible(30, 25, 5)).toBe(true)
  })

  it("not when the minute before took more than this one", () => {
    // 40 calls in the minute before, 10 in this one: no calendar quota of 10 allowed those 40.
    const law = new Learning(60)
    okCalls(law, T, 40, 1_500)
    okCalls(law, T + 60_000, 10, 1_500)
    sendRefused(law, T + 75_000)
    sendRefused(law, T + 76_000)
    const at = law.dispatchAt(T + 76_100)
    expect(at).toBeLessThan(T + 120_000)
    expect(calendarPossible(40, 10, 40)).toBe(false)
  })
})

describe("calendarPossible", () => {
  it("needs this minute's count within 2 of the minute before's, and at least half the sliding count (2 spare)", () => {
    expect(calendarPossible(30, 28, 30)).toBe(true)
    expect(calendarPossible(30, 27, 30)).toBe(false)
    expect(calendarPossible(58, 28, 0)).toBe(true)
    expect(calendarPossible(59, 28, 0)).toBe(false)
    expect(calendarPossible(0, 0, 0)).toBe(false)
  })
})

describe("ShapeVote", () => {
  it("turns calendar after two 429s whose calendar count repeated and sliding count did not", () => {
    const vote = new ShapeVote()
    expect(vote.observe(35, 30, 30)).toBe("sliding")
    expect(vote.observe(40, 30, 30)).toBe("sliding")
    expect(vote.observe(33, 31, 30)).toBe("calendar")
  })

  it("stays sliding when the sliding count repeats", () => {
    const vote = new ShapeVote()
    vote.observe(30, 10, 30)
    vote.observe(30, 22, 30)
    expect(vote.observe(31, 5, 30)).toBe("sliding")
  })

  it("never answers calendar for a count the minute before exceeded", () => {
    const vote = new ShapeVote()
    vote.observe(35, 30, 30)
    vote.observe(40, 30, 30)
    expect(vote.observe(45, 30, 33)).toBe("sliding")
  })
})

describe("SendWindow", () => {
  it("counts adds less removes over the window, dropping calls as they age out", () => {
    const w = new SendWindow(60_000)
    w.add(T)
    w.add(T + 1_000)
    w.add(T + 1_000)
    w.remove(T + 1_000)
    expect(w.count(T + 59_999)).toBe(2)
    expect(w.count(T + 60_099)).toBe(2) // T's 100 ms slot leaves at T + 60.1 s
    expect(w.count(T + 60_100)).toBe(1)
    expect(w.count(T + 61_100)).toBe(0)
    w.remove(T) // already gone: nothing changes
    expect(w.count(T + 61_100)).toBe(0)
  })

  it("counts within a shorter span and tells when the k-th oldest leaves", () => {
    const w = new SendWindow(60_000)
    for (const at of [T, T + 500, T + 10_000]) w.add(at)
    // T + 500 counts as sent at T + 600, the end of its slot.
    expect(w.countWithin(T + 10_000, 9_400)).toBe(1)
    expect(w.countWithin(T + 10_000, 9_500)).toBe(2)
    expect(w.leavesAt(T + 10_000, 1)).toBe(T + 100 + 60_000)
    expect(w.leavesAt(T + 10_000, 3)).toBe(T + 10_100 + 60_000)
    expect(w.leavesAt(T + 10_000, 4)).toBe(T + 10_000)
  })
})
