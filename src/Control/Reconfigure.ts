import { Context, Effect, Layer } from "effect"
import { PriorityQueue } from "../Admission/PriorityQueue.js"
import { RateLimiter } from "../Admission/RateLimiter.js"
import type { InvalidPatch } from "../Common/Errors.js"
import type { HotChanges } from "../Config/HotSettings.js"

/** Applies hot changes to the running services: the one path for the admin API and a SIGHUP reload. */
export class Reconfigure extends Context.Tag("sidecar/Reconfigure")<Reconfigure, {
  readonly apply: (changes: HotChanges) => Effect.Effect<void, InvalidPatch>
}>() {
  static readonly layer = Layer.effect(
    Reconfigure,
    Effect.gen(function*() {
      const queue = yield* PriorityQueue
      const limiter = yield* RateLimiter
      return Reconfigure.of({
        apply: (change) =>
          Effect.all([
            queue.configure({
              ...(change.queueMax === undefined ? {} : { max: change.queueMax }),
              ...(change.queueFullPolicy === undefined ? {} : { policy: change.queueFullPolicy }),
              ...(change.lowTimeout === undefined ? {} : { lowTimeout: change.lowTimeout })
            }),
            change.clients === undefined ? Effect.void : queue.configureClients(change.clients),
            limiter.configure({
              ...(change.rateRpm === undefined ? {} : { rateRpm: change.rateRpm }),
              ...(change.bucketCapacity === undefined ? {} : { capacity: change.bucketCapacity })
            })
          ], { discard: true })
      })
    })
  )
}
