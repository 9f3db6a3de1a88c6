// Fresh scheduler layers for one test each: the real services on top of SidecarConfig.layerTest.
import { Layer } from "effect"
import * as Dispatcher from "../../src/Dispatcher.js"
import { Metrics } from "../../src/Metrics.js"
import { RequestQueue } from "../../src/RequestQueue.js"
import { SidecarConfig, type SidecarConfigShape } from "../../src/SidecarConfig.js"
import { TokenBucket } from "../../src/TokenBucket.js"

export type ConfigOverrides = Partial<SidecarConfigShape>

/** The bucket alone, with its 5 s retreat-evaluation fiber. */
export const bucketWith = (overrides: ConfigOverrides) =>
  TokenBucket.layer.pipe(Layer.provide(SidecarConfig.layerTest(overrides)))

/** Dispatcher loop running; RequestQueue and TokenBucket stay visible to the test. */
export const schedulerWith = (overrides: ConfigOverrides) =>
  Dispatcher.layer.pipe(
    Layer.provideMerge(RequestQueue.layer),
    Layer.provideMerge(Layer.mergeAll(TokenBucket.layer, Metrics.layer)),
    Layer.provide(SidecarConfig.layerTest(overrides))
  )
