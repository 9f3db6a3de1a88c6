import { Clock, Context, Deferred, Duration, Effect, Exit, FiberId, Layer } from "effect"
import { SidecarConfig } from "../Config/SidecarConfig.js"

/**
 * The in-flight bound (SIDECAR_MAX_INFLIGHT). A plain counter, not STM: taking and freeing a
 * slot happens twice per request, and each step is one synchronous block, so nothing can
 * interleave with it. A waiter sleeps on a Deferred that the next release completes.
 */
export class Inflight extends Context.Tag("sidecar/Inflight")<Inflight, {
  /** Takes a slot if one is free now; the release frees it the first time it runs. */
  readonly tryAcquire: Effect.Effect<Effect.Effect<void> | undefined>
  /** Waits until a slot is free, then takes it. Only the wait can be interrupted: an interrupted acquire holds nothing. */
  readonly acquire: Effect.Effect<Effect.Effect<void>>
  /** Like `acquire`, giving up (undefined) after `timeout`. */
  readonly acquireWithin: (timeout: Duration.Duration) => Effect.Effect<Effect.Effect<void> | undefined>
  readonly used: Effect.Effect<number>
}>() {
  static readonly layer = Layer.effect(Inflight, Effect.map(SidecarConfig, (config) => make(config.maxInflight)))
}

const make = (max: number): Inflight["Type"] => {
  let used = 0
  let freed = Deferred.unsafeMake<void>(FiberId.none)
  const release = () => {
    used = Math.max(0, used - 1)
    const waiters = freed
    freed = Deferred.unsafeMake<void>(FiberId.none)
    Deferred.unsafeDone(waiters, Exit.void)
  }
  // One release per acquisition, however often it runs.
  const releaser = (): Effect.Effect<void> => {
    let done = false
    return Effect.sync(() => {
      if (done) return
      done = true
      release()
    })
  }
  const take = () => (used < max ? (used++, releaser()) : undefined)
  const acquireWithin = (timeout: Duration.Duration) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(timeout)
        for (;;) {
          const slot = take()
          if (slot !== undefined) return slot
          const left = deadline - (yield* Clock.currentTimeMillis)
          if (left <= 0) return undefined
          yield* restore(Effect.timeoutOption(Effect.suspend(() => Deferred.await(freed)), Duration.millis(left)))
        }
      })
    )
  return {
    tryAcquire: Effect.sync(take),
    acquire: Effect.map(acquireWithin(Duration.infinity), (slot) => slot!),
    acquireWithin,
    used: Effect.sync(() => used)
  }
}
