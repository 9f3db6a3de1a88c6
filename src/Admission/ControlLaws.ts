import type { ControlLawName, MakeControlLaw } from "./ControlLaw.js"
import * as Adr009 from "./Laws/Adr009.js"
import * as Learning from "./Laws/Learning.js"

/** SIDECAR_RATE_CONTROL: the laws by name. */
export const laws: Readonly<Record<ControlLawName, MakeControlLaw>> = {
  adr009: Adr009.make,
  learning: Learning.make
}

/** The learning law wins every simulated scenario (sim/README.md), so it is the default. */
export const defaultLaw: ControlLawName = "learning"
