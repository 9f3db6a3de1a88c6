import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Context, Effect, Layer, Option } from "effect"
import { Upstream } from "../DataPath/Upstream.js"
import { joinTo, upstreamBase } from "../DataPath/UpstreamUrl.js"
import { SidecarConfig } from "../SidecarConfig.js"

/** Whether the primary upstream answers HTTP at all, probed at most once per 5 s. */
export class Readiness extends Context.Tag("sidecar/Readiness")<Readiness, {
  readonly upstreamReachable: Effect.Effect<boolean>
}>() {
  static readonly layer = Layer.effect(
    Readiness,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const { authorization } = yield* Upstream
      const client = (yield* HttpClient.HttpClient).pipe(HttpClient.withTracerPropagation(false))
      const models = joinTo(upstreamBase(config.upstream), "/v1/models")
      const probe = client.execute(
        HttpClientRequest.get(models.origin + models.path).pipe(
          Option.isSome(authorization) ? HttpClientRequest.setHeader("authorization", authorization.value) : (r) => r
        )
      ).pipe(
        Effect.map((response) => response.status < 500),
        Effect.timeoutTo({ duration: "3 seconds", onTimeout: () => false, onSuccess: (ok) => ok }),
        Effect.scoped,
        Effect.orElseSucceed(() => false),
        // A probe every few seconds is not a trace anyone wants exported.
        Effect.withTracerEnabled(false)
      )
      return Readiness.of({ upstreamReachable: yield* Effect.cachedWithTTL(probe, "5 seconds") })
    })
  )
}
