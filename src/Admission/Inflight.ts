import { Clock, Context, Duration, Effect, Layer, Option } from "effect"
import { Signal } from "../Common/Signal.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import { ModelConcurrency } from "./Laws/ConcurrencyCap.js"

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
  /**
   * Sets what a release runs first, in the releaser's stack: true when it put the freed slot to
   * use itself, so no waiter need wake. One hook (the dispatcher's); a release inside it just wakes.
   */
  readonly onRelease: (handOff: Effect.Effect<boolean>) => Effect.Effect<void>
}>() {
  static readonly layer = Layer.effect(Inflight, Effect.map(SidecarConfig, (config) => make(config.maxInflight)))
}

const make = (max: number): Inflight["Type"] => {
  let used = 0
  const freed = new Signal()
  let handing = false
  const wake = Effect.sync(() => freed.fire())
  const doneHanding = Effect.sync(() => void (handing = false))
  // The hook wrapped once when it is set, not once per release.
  let handOff: Effect.Effect<void> | undefined
  const release = (): Effect.Effect<void> => {
    used = Math.max(0, used - 1)
    if (handOff === undefined || handing) return wake
    handing = true
    return handOff
  }
  // One release per acquisition, however often it runs.
  const releaser = (): Effect.Effect<void> => {
    let done = false
    return Effect.suspend(() => {
      if (done) return Effect.void
      done = true
      return release()
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
          yield* restore(Effect.timeoutOption(freed.wait, Duration.millis(left)))
        }
      })
    )
  // The dispatcher's wait: no deadline, so no timer race per admission.
  const acquire: Effect.Effect<Effect.Effect<void>> = Effect.uninterruptibleMask((restore) =>
    Effect.suspend(function loop(): Effect.Effect<Effect.Effect<void>> {
      const slot = take()
      return slot !== undefined ? Effect.succeed(slot) : Effect.zipRight(restore(freed.wait), Effect.suspend(loop))
    })
  )
  return {
    tryAcquire: Effect.sync(take),
    acquire,
    acquireWithin,
    used: Effect.sync(() => used),
    onRelease: (next) => Effect.sync(() => void (handOff = Effect.flatMap(Effect.ensuring(next, doneHanding), (handed) => (handed ? Effect.void : wake))))
  }
}

/**
 * Per-model in-flight limits learned from concurrency-cap 429s (ModelConcurrency): a request for
 * a model at its limit waits here, before the queue, so it holds no token and no slot meanwhile.
 * Models without a learned limit pass straight through.
 */
export class ModelSlots extends Context.Tag("sidecar/ModelSlots")<ModelSlots, {
  /**
   * Waits until `model` has room (at most until `deadline`), counts the call in; the effect
   * releases it (once). Undefined when the deadline passed first. No timer unless it must wait.
   */
  readonly enter: (model: string | undefined, deadline: number) => Effect.Effect<Effect.Effect<void> | undefined>
  /** A cap signal for `model`, with the limit the body stated if any. */
  readonly capped: (model: string | undefined, statedLimit: number | undefined) => Effect.Effect<void>
  /** A successful answer keeps the model's entry fresh. */
  readonly answered: (model: string | undefined) => Effect.Effect<void>
  /** Learned limits by model. */
  readonly limits: Effect.Effect<Readonly<Record<string, number>>>
}>() {
  static readonly layer = Layer.effect(
    ModelSlots,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const clock = yield* Effect.clock
      const learned = new ModelConcurrency(config.maxInflight)
      const counts = new Map<string, number>()
      const freed = new Signal()
      const leave = (model: string) => {
        const n = (counts.get(model) ?? 1) - 1
        if (n <= 0) counts.delete(model)
        else counts.set(model, n)
        freed.fire()
      }
      const enter = (model: string | undefined, deadline: number): Effect.Effect<Effect.Effect<void> | undefined> =>
        Effect.suspend(() => {
          if (model === undefined) return Effect.succeed(Effect.void)
          const limit = learned.limitFor(model)
          const n = counts.get(model) ?? 0
          if (limit !== undefined && n >= limit) {
            const left = deadline - clock.unsafeCurrentTimeMillis()
            if (left <= 0) return Effect.succeed(undefined)
            return Effect.flatMap(
              Effect.timeoutOption(freed.wait, Duration.millis(left)),
              (woken) => (Option.isNone(woken) ? Effect.succeed(undefined) : enter(model, deadline))
            )
          }
          counts.set(model, n + 1)
          learned.onDispatch(model, n + 1, clock.unsafeCurrentTimeMillis())
          let done = false
          return Effect.succeed(Effect.sync(() => {
            if (!done) leave(model)
            done = true
          }))
        })
      return ModelSlots.of({
        enter,
        capped: (model, statedLimit) =>
          Effect.sync(() => {
            if (model !== undefined) learned.onCapSignal(model, counts.get(model) ?? 1, statedLimit, clock.unsafeCurrentTimeMillis())
          }),
        answered: (model) => Effect.sync(() => model !== undefined && learned.onSuccess(model)),
        limits: Effect.sync(() => learned.snapshot())
      })
    })
  )
}
