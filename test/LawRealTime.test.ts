// The simulator checked against the real process (issue 10): the built sidecar at 60 RPM in front
// of a mock with a 30 RPM sliding-window quota and no Retry-After, offered 90 RPM for 90 s of
// wall clock (scenario 1a's shape, same arrivals as the simulator's seed 1). The one long test.
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { checkTable, gaps, realTimeCheck } from "../sim/RealTime.js"

const root = fileURLToPath(new URL("..", import.meta.url))

describe("real time: the sidecar process against a sliding-window quota without Retry-After", () => {
  it("holds the quota with no client 429 and agrees with the simulator within 10 %", async () => {
    const r = await realTimeCheck({ seconds: 90, lastSeconds: 30, root })
    const figures = JSON.stringify({ real: r.real, sim: r.sim, control: r.control })
    console.info(checkTable(r))
    // Headline figures of the real process.
    expect(r.real.client429, figures).toBe(0)
    expect(r.real.otherStatuses, figures).toBe(0)
    expect(r.real.upstream429, figures).toBeGreaterThan(0) // the quota was met: the law had something to learn
    expect(r.real.share429, figures).toBeLessThanOrEqual(0.05)
    // Once learned (from ~60 s), upstream successes run at the quota: about 15 in the last 30 s
    // (a probe may add one; the mock refuses whatever exceeds the window, which the 429 share bounds).
    expect(r.real.efficiencyLast, figures).toBeGreaterThanOrEqual(0.9)
    expect(r.control, figures).toMatchObject({ law: "learning", quota_estimate_rpm: expect.closeTo(30, 0) })
    // The simulator's run of the same situation says the same.
    expect(r.sim.client429, figures).toBe(0)
    for (const [figure, gap] of Object.entries(gaps(r))) expect(gap, `${figure}: ${figures}`).toBeLessThanOrEqual(0.1)
  }, 150_000)
})
