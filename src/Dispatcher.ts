import { Deferred, Effect, Layer, Option } from "effect"
import { RequestQueue } from "./RequestQueue.js"
import { TokenBucket } from "./TokenBucket.js"

/** The admission loop: a fiber that lives as long as the application. */
export const layer = Layer.scopedDiscard(
  Effect.gen(function*() {
    const queue = yield* RequestQueue
    const bucket = yield* TokenBucket

    // Slot and token first, ticket second: the best request is chosen only once the token is
    // in hand, so an urgent request that arrived during the wait still goes first.
    const admitOne = (release: Effect.Effect<void>) => Effect.gen(function*() {
      const head = yield* queue.head
      // The wait is charged to the request at the head while it lasts.
      const take = Option.match(head.span, {
        onNone: () => bucket.take,
        onSome: (parent) =>
          Effect.withSpan(bucket.take, "sidecar.token_wait", { parent, captureStackTrace: false, attributes: { "sidecar.priority": head.priority } })
      })
      // A token at hand needs no waiting. Otherwise a low request at the head waits at most
      // lowTimeout; if the head changes (it left, or a better one arrived) the wait starts over.
      const { lowTimeout } = yield* queue.settings
      const outcome = (yield* bucket.tryTake) ? "token" : yield* Effect.race(
        head.priority === "low"
          ? Effect.map(Effect.timeoutOption(take, lowTimeout), (t) => (Option.isSome(t) ? "token" as const : "expired" as const))
          : Effect.as(take, "token" as const),
        Effect.as(queue.headChanged(head), "changed" as const)
      )
      if (outcome === "expired") yield* queue.expireLow(head)
      if (outcome !== "token") return false
      while (true) {
        const ticket = yield* queue.next
        // A ticket whose caller already gave up is complete: skip it, keep the token.
        if (yield* Deferred.succeed(ticket.admitted, { release })) return true
      }
    })

    const step = Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        // Hold a slot only while someone waits: an idle dispatcher must not shrink the bound.
        yield* restore(queue.head)
        yield* restore(queue.slots.acquire)
        const release = queue.slots.releaser()
        const admitted = yield* restore(admitOne(release)).pipe(Effect.onInterrupt(() => release))
        if (!admitted) yield* release
      })
    )

    yield* step.pipe(Effect.forever, Effect.annotateLogs({ service: "Dispatcher" }), Effect.forkScoped)
  })
)
