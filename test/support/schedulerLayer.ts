// Fresh admission layers for one test each: the real services on top of SidecarConfig.layerTest.
import { Context, Effect, Layer } from "effect"
import { Admission } from "../../src/Admission/Admission.js"
import { Inflight } from "../../src/Admission/Inflight.js"
import { PriorityQueue } from "../../src/Admission/PriorityQueue.js"
import { RateLimiter } from "../../src/Admission/RateLimiter.js"
import * as App from "../../src/App.js"
import type { AdmissionError } from "../../src/Common/Errors.js"
import type { Priority } from "../../src/Common/Priority.js"
import { Metrics } from "../../src/Observability/Metrics.js"
import { SidecarConfig, type SidecarConfigShape } from "../../src/Config/SidecarConfig.js"

export type ConfigOverrides = Partial<SidecarConfigShape>

/** The limiter alone, with its 5 s evaluation fiber. */
export const bucketWith = (overrides: ConfigOverrides) =>
  RateLimiter.layer.pipe(Layer.provide(SidecarConfig.layerTest(overrides)))

export interface Admitted {
  readonly waitedMs: number
  readonly seq: number
  readonly bypassed: boolean
  /** Served at (after its client's max_priority), and counted against. */
  readonly priority: Priority
  readonly clientId: string
  /** Frees the slot (a call that got no answer: no bucket feedback); runs once however often. */
  readonly release: Effect.Effect<void>
}

/** The scheduler as the tests drive it: admit by priority (and seq for a retry), plus the queue's and slots' state. */
export class Scheduler extends Context.Tag("test/Scheduler")<Scheduler, {
  readonly admit: (priority: Priority, seq?: number, clientId?: string) => Effect.Effect<Admitted, AdmissionError>
  readonly queue: PriorityQueue["Type"]
  readonly used: Effect.Effect<number>
}>() {}

const schedulerProbe = Layer.effect(
  Scheduler,
  Effect.gen(function*() {
    const admission = yield* Admission
    const queue = yield* PriorityQueue
    const inflight = yield* Inflight
    return {
      admit: (priority, seq, clientId) =>
        Effect.map(
          admission.acquire({ priority, model: undefined, clientId, retry: seq === undefined ? undefined : { seq, attempt: 1, arrivedAt: 0 } }),
          (permit) => ({ ...permit, release: Effect.asVoid(permit.finish({ _tag: "Failed" })) })
        ),
      queue,
      used: inflight.used
    }
  })
)

/** Dispatcher loop running; the queue, the limiter and the probe stay visible to the test. */
export const schedulerWith = (overrides: ConfigOverrides) =>
  schedulerProbe.pipe(
    Layer.provideMerge(App.admission),
    Layer.provideMerge(Metrics.layer),
    Layer.provideMerge(SidecarConfig.layerTest(overrides))
  )
