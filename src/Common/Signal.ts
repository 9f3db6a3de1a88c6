import { Deferred, Effect, Exit, FiberId } from "effect"

/**
 * A wake-up for whoever waits now: each `fire` releases the current waiters and arms a new one.
 * Plain state, not STM: firing and waiting are single synchronous steps in one runtime.
 */
export class Signal {
  // Made when someone waits, so a fire with nobody waiting (the common case) allocates nothing.
  private current: Deferred.Deferred<void> | undefined
  readonly wait: Effect.Effect<void> = Effect.suspend(() => Deferred.await(this.current ??= Deferred.unsafeMake<void>(FiberId.none)))
  fire(): void {
    const fired = this.current
    this.current = undefined
    if (fired !== undefined) Deferred.unsafeDone(fired, Exit.void)
  }
}
