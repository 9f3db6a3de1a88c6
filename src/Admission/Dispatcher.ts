import { Clock, Effect, Exit, Layer, Option } from "effect"
import { RateLimited } from "../Common/Errors.js"
import { Inflight } from "./Inflight.js"
import { PriorityQueue } from "./PriorityQueue.js"
import { RateLimiter } from "./RateLimiter.js"

/** The admission loop: one fiber that hands a slot and a token to the best waiting request. */
export const layer = Layer.scopedDiscard(
  Effect.gen(function*() {
    const queue = yield* PriorityQueue
    const limiter = yield* RateLimiter
    const inflight = yield* Inflight

    // Slot and token first, ticket second: the best request is chosen only once the token is
    // in hand, so an urgent request that arrived during the wait still goes first.
    const admitOne = (release: Effect.Effect<void>) =>
      Effect.gen(function*() {
        const head = yield* queue.head
        // A token at hand needs no waiting. Otherwise a low request at the head waits at most
        // lowTimeout; if the head changes (it left, or a better one arrived) the wait starts over.
        const { lowTimeout } = yield* queue.settings
        if (yield* limiter.tryTake(head.priority)) return yield* admitBest(release)
        // The wait is charged to the request at the head while it lasts.
        const span = head.span === undefined
          ? undefined
          : yield* Effect.makeSpan("sidecar.token_wait", { parent: head.span, captureStackTrace: false, attributes: { "sidecar.priority": head.priority } })
        // A shared limit that is unreachable (closed mode) refuses the head at once.
        const take = Effect.catchAll(Effect.as(limiter.take(head.priority), "token" as const), Effect.succeed)
        const outcome = yield* Effect.race(
          head.priority === "low"
            ? Effect.map(Effect.timeoutOption(take, lowTimeout), Option.getOrElse(() => "expired" as const))
            : take,
          Effect.as(queue.headChanged(head), "changed" as const)
        )
        if (span !== undefined) {
          // Ended by hand, always OK: a wait that restarts is not an error (and carries no Effect internals).
          span.attribute("sidecar.token_wait.outcome", typeof outcome === "object" ? "unavailable" : outcome)
          span.end(yield* Clock.currentTimeNanos, Exit.void)
        }
        if (typeof outcome === "object") return yield* Effect.as(queue.settle(head, { _tag: "Refused", error: outcome }), false)
        if (outcome === "expired") {
          const retryAfterMs = yield* limiter.retryAfterMs
          yield* queue.settle(head, { _tag: "Refused", error: new RateLimited({ reason: "low_priority_timeout", retryAfterMs }) })
        }
        return outcome === "token" ? yield* admitBest(release) : false
      })

    // Everyone may have left during the wait: the token and the slot wait for the next one.
    const admitBest = (release: Effect.Effect<void>) =>
      Effect.flatMap(queue.head, (best) => queue.settle(best, { _tag: "Admitted", release }))

    const step = Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        // Hold a slot only while someone waits: an idle dispatcher must not shrink the bound.
        yield* restore(queue.head)
        const release = yield* restore(inflight.acquire)
        const admitted = yield* restore(admitOne(release)).pipe(Effect.onInterrupt(() => release))
        if (!admitted) yield* release
      })
    )

    // While the in-flight bound bites, each release admits the next request itself when a token
    // is at hand (what `admitOne` would do first), so this fiber is not woken once per admission.
    // Plain combinators, no generator: it runs on every release.
    yield* inflight.onRelease(Effect.flatMap(queue.best, (best) =>
      best === undefined ? notHanded : Effect.flatMap(limiter.tryTake(best.priority), (took) =>
        !took ? notHanded : Effect.flatMap(inflight.tryAcquire, (release) =>
          release === undefined ? Effect.as(limiter.refund(), false) : queue.settle(best, { _tag: "Admitted", release })))))

    yield* step.pipe(Effect.forever, Effect.forkScoped)
  })
)

const notHanded: Effect.Effect<boolean> = Effect.succeed(false)
