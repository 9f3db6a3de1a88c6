import { Deferred, Effect, Exit, FiberId } from "effect"

/**
 * A wake-up for whoever waits now: each `fire` releases the current waiters and arms a new one.
 * Plain state, not STM: firing and waiting are single synchronous steps in one runtime.
 */
export class Signal {
  private current = Deferred.unsafeMake<void>(FiberId.none)
  readonly wait: Effect.Effect<void> = Effect.suspend(() => Deferred.await(this.current))
  fire(): void {
    const fired = this.current
    this.current = Deferred.unsafeMake<void>(FiberId.none)
    Deferred.unsafeDone(fired, Exit.void)
  }
}
