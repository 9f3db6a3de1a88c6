import { Cause, Effect, Either, Exit, FiberId, Runtime } from "effect"
import { ClientGone, Defect } from "../Common/Errors.js"

export type Bridged<A, E> = Either.Either<A, E | Defect | ClientGone>

/**
 * The one way plain Node code enters the Effect runtime. An effect that completes without
 * suspending settles synchronously (no Promise, no extra tick); one that waits is interrupted
 * when `signal` aborts. Expected failures come back as `Left(error)`; a defect comes back as
 * `Left(Defect)` after an ERROR log line with its cause, never as a silent client-gone.
 */
export interface Bridge {
  readonly run: <A, E>(effect: Effect.Effect<A, E>, signal?: AbortSignal) => Bridged<A, E> | Promise<Bridged<A, E>>
  /**
   * Waits for `pending` with no fiber: the Promise settles with the result of the effect it is
   * called back with (run at once, in the caller's stack), or with ClientGone after `leave` ran
   * when `signal` aborts first.
   */
  readonly wait: <A, E>(pending: Pending<A, E>, signal: AbortSignal) => Promise<Bridged<A, E>>
}

/** Something settled later by plain code, e.g. a queued admission (Admission's `Waiting`). */
export interface Pending<A, E> {
  readonly onSettled: (settled: (rest: Effect.Effect<A, E>) => void) => void
  readonly leave: Effect.Effect<void>
}

export const make: Effect.Effect<Bridge> = Effect.map(Effect.runtime<never>(), (runtime) => {
  const runFork = Runtime.runFork(runtime)

  const settle = <A, E>(exit: Exit.Exit<A, E>, signal: AbortSignal | undefined): Bridged<A, E> => {
    if (Exit.isSuccess(exit)) return Either.right(exit.value)
    const failure = Cause.failureOption(exit.cause)
    if (failure._tag === "Some") return Either.left(failure.value)
    if (Cause.isInterruptedOnly(exit.cause) && signal?.aborted === true) return Either.left(clientGone)
    runFork(Effect.logError({ msg: "defect", cause: Cause.pretty(exit.cause) }))
    return Either.left(defect)
  }

  const run = <A, E>(effect: Effect.Effect<A, E>, signal?: AbortSignal): Bridged<A, E> | Promise<Bridged<A, E>> => {
    if (signal?.aborted === true) return Either.left(clientGone)
    // runFork starts the fiber at once: an effect that never suspends has finished on return.
    const fiber = runFork(effect)
    const done = fiber.unsafePoll()
    if (done !== null) return settle(done, signal)
    return new Promise((resolve) => {
      const onAbort = () => fiber.unsafeInterruptAsFork(FiberId.none)
      signal?.addEventListener("abort", onAbort, { once: true })
      fiber.addObserver((exit) => {
        signal?.removeEventListener("abort", onAbort)
        resolve(settle(exit, signal))
      })
    })
  }

  const wait = <A, E>(pending: Pending<A, E>, signal: AbortSignal): Promise<Bridged<A, E>> =>
    new Promise((resolve) => {
      const onAbort = () => {
        run(pending.leave)
        resolve(Either.left(clientGone))
      }
      if (signal.aborted) return onAbort()
      signal.addEventListener("abort", onAbort, { once: true })
      pending.onSettled((rest) => {
        signal.removeEventListener("abort", onAbort)
        resolve(run(rest, signal))
      })
    })

  return { run, wait }
})

const clientGone = new ClientGone()
const defect = new Defect()
