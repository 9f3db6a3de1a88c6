// The simulator's scenarios 1 (three quota shapes) and 2 under the default law, against the
// issue's targets. Simulated time: 30 minutes per scenario in well under a second.
import { describe, expect, it } from "vitest"
import { defaultLaw } from "../src/Admission/ControlLaws.js"
import { lawVariant, runScenario } from "../sim/Run.js"
import { scenarios } from "../sim/Scenarios.js"

describe("simulator: the default law meets the targets", () => {
  it("is the learning law", () => {
    expect(defaultLaw).toBe("learning")
  })

  for (const id of ["1a", "1b", "1c", "2"]) {
    const scenario = scenarios.find((s) => s.id === id)!
    it(`scenario ${id}: ${scenario.title}`, () => {
      const { m } = runScenario(scenario, lawVariant(defaultLaw))
      const missed = scenario.targets.filter((t) => !t.met(m)).map((t) => t.name)
      expect(missed, JSON.stringify({ efficiency: m.efficiency, share429: m.share429, upstream429: m.upstream429, relayed429: m.relayed429 })).toEqual([])
      expect(scenario.targets.length).toBeGreaterThan(0)
    })
  }

  it("and ADR-009 does not, against the same upstream", () => {
    const scenario = scenarios.find((s) => s.id === "1a")!
    const { m } = runScenario(scenario, lawVariant("adr009"))
    expect(m.efficiency).toBeLessThan(0.95)
  })
})
