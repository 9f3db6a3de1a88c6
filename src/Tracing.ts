import { Layer } from "effect"

/** OpenTelemetry export; off (no cost) until configured. */
export const layer = Layer.empty
