import { Context, Deferred, Effect, Layer, Option, Ref } from "effect"
import { RequestQueue } from "./RequestQueue.js"
import { SidecarConfig } from "./SidecarConfig.js"
import { TokenBucket } from "./TokenBucket.js"

/** Runs the admission loop; exposes only how many admitted calls are in flight. */
export class Dispatcher extends Context.Tag("sidecar/Dispatcher")<Dispatcher, {
  readonly inflight: Effect.Effect<number>
}>() {
  static readonly layer = Layer.scoped(
    Dispatcher,
    Effect.gen(function*() {
      const { maxInflight } = yield* SidecarConfig
      const queue = yield* RequestQueue
      const bucket = yield* TokenBucket
      const permits = yield* Effect.makeSemaphore(maxInflight)
      const inflight = yield* Ref.make(0)

      // Token first, ticket second: the best request is chosen only once the token is in
      // hand, so an urgent request that arrived during the wait still goes first.
      const admitOne = Effect.gen(function*() {
        const head = yield* queue.head
        // The wait is charged to the request at the head while it lasts.
        const take = Option.match(head.span, {
          onNone: () => bucket.take,
          onSome: (parent) => Effect.withSpan(bucket.take, "sidecar.token_wait", { parent, attributes: { "sidecar.priority": head.priority } })
        })
        // A low request at the head waits at most lowTimeout; if the head changes (it left, or
        // a better one arrived) the wait starts over for the new head.
        const { lowTimeout } = yield* queue.settings
        const outcome = yield* Effect.race(
          head.priority === "low"
            ? Effect.map(Effect.timeoutOption(take, lowTimeout), (t) => (Option.isSome(t) ? "token" as const : "expired" as const))
            : Effect.as(take, "token" as const),
          Effect.as(queue.headChanged(head), "changed" as const)
        )
        if (outcome === "expired") yield* queue.expireLow(head)
        if (outcome !== "token") return false
        while (true) {
          const ticket = yield* queue.next
          const release = yield* Effect.once(Effect.zipRight(Ref.update(inflight, (n) => n - 1), permits.release(1)))
          yield* Ref.update(inflight, (n) => n + 1)
          // A ticket whose caller already gave up is complete: skip it, keep the token.
          if (yield* Deferred.succeed(ticket.admitted, { release })) return true
          yield* Ref.update(inflight, (n) => n - 1)
        }
      })

      const step = Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          yield* restore(permits.take(1))
          const admitted = yield* restore(admitOne).pipe(Effect.onInterrupt(() => permits.release(1)))
          if (!admitted) yield* permits.release(1)
        })
      )

      yield* step.pipe(Effect.forever, Effect.annotateLogs({ service: "Dispatcher" }), Effect.forkScoped)

      return Dispatcher.of({ inflight: Ref.get(inflight) })
    })
  )
}
