import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Context, Effect, Layer } from "effect"
import { joinTo, upstreamBase } from "../DataPath/UpstreamUrl.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"

/** Whether the primary upstream answers HTTP at all, probed at most once per 5 s. */
export class Readiness extends Context.Tag("sidecar/Readiness")<Readiness, {
  readonly upstreamReachable: Effect.Effect<boolean>
}>() {
  static readonly layer = Layer.effect(
    Readiness,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const client = (yield* HttpClient.HttpClient).pipe(HttpClient.withTracerPropagation(false))
      const models = joinTo(upstreamBase(config.upstream), "/v1/models")
      // Sent without the key: any HTTP answer (401 included) proves reachability, and no quota is spent.
      const probe = client.execute(HttpClientRequest.get(models.origin + models.path)).pipe(
        Effect.map((response) => response.status < 500),
        Effect.timeoutTo({ duration: "3 seconds", onTimeout: () => false, onSuccess: (ok) => ok }),
        Effect.scoped,
        Effect.orElseSucceed(() => false),
        // A probe every few seconds is not a trace anyone wants exported.
        Effect.withTracerEnabled(false)
      )
      // One line per flip, not per probe.
      let last: boolean | undefined
      const logged = Effect.tap(probe, (reachable) => {
        const flipped = last !== undefined && last !== reachable
        last = reachable
        if (!flipped) return Effect.void
        return reachable
          ? Effect.logInfo({ msg: "upstream_reachable", upstream: models.origin })
          : Effect.logWarning({ msg: "upstream_unreachable", upstream: models.origin })
      })
      return Readiness.of({ upstreamReachable: yield* Effect.cachedWithTTL(logged, "5 seconds") })
    })
  )
}
