import { Clock, Deferred, Duration, Effect, Exit, FiberId } from "effect"

export interface Slots {
  /** Takes a slot if one is free now. */
  readonly tryAcquire: Effect.Effect<boolean>
  /** Waits until a slot is free, then takes it. Only the wait can be interrupted: an interrupted acquire holds nothing. */
  readonly acquire: Effect.Effect<void>
  /** Like `acquire`, giving up (false) after `timeout`. */
  readonly acquireWithin: (timeout: Duration.Duration) => Effect.Effect<boolean>
  /** A release for one acquisition: frees its slot the first time it runs, never again. */
  readonly releaser: () => Effect.Effect<void>
  readonly used: Effect.Effect<number>
}

/**
 * The in-flight bound (SIDECAR_MAX_INFLIGHT). A plain counter, not STM: taking and freeing a
 * slot happens twice per request, and each step is one synchronous block, so nothing can
 * interleave with it. A waiter sleeps on a Deferred that the next release completes.
 */
export const makeSlots = (max: number): Effect.Effect<Slots> =>
  Effect.sync(() => {
    let used = 0
    let freed = Deferred.unsafeMake<void>(FiberId.none)
    const tryAcquire = Effect.sync(() => (used < max ? (used++, true) : false))
    const acquireWithin = (timeout: Duration.Duration) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(timeout)
          while (!(yield* tryAcquire)) {
            const left = deadline - (yield* Clock.currentTimeMillis)
            if (left <= 0) return false
            yield* restore(Effect.timeoutOption(Deferred.await(freed), Duration.millis(left)))
          }
          return true
        })
      )
    const acquire = Effect.asVoid(acquireWithin(Duration.infinity))
    const release = Effect.sync(() => {
      used = Math.max(0, used - 1)
      const waiters = freed
      freed = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(waiters, Exit.void)
    })
    const releaser = () => {
      let done = false
      return Effect.suspend(() => {
        if (done) return Effect.void
        done = true
        return release
      })
    }
    return { tryAcquire, acquire, acquireWithin, releaser, used: Effect.sync(() => used) }
  })
