import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { Context, Effect, Layer, Option, Schema } from "effect"
import { UpstreamFailed } from "../Common/Errors.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import { Upstream, type UpstreamName } from "./Upstream.js"
import { joinTo, upstreamBase } from "./UpstreamUrl.js"

const ModelList = Schema.Struct({
  object: Schema.optional(Schema.String),
  data: Schema.Array(Schema.Struct({ id: Schema.String }, { key: Schema.String, value: Schema.Unknown }))
})

export type Model = (typeof ModelList.Type)["data"][number]

/**
 * `GET /v1/models`: what routing serves. The primary list is fetched with the sidecar's key at
 * most once per `ttl` (a flood of listings spends no quota); a passthrough upstream's list is
 * fetched with the client's own credentials and merged in, primary entries first (left out while it fails).
 */
export class ModelCatalog extends Context.Tag("sidecar/ModelCatalog")<ModelCatalog, {
  readonly list: (clientAuthorization: string | undefined) => Effect.Effect<{ readonly object: "list"; readonly data: ReadonlyArray<Model> }, UpstreamFailed>
}>() {
  static readonly layer = Layer.effect(
    ModelCatalog,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const { authorization } = yield* Upstream
      const client = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk, HttpClient.withTracerPropagation(false))
      const fetch = (upstream: UpstreamName, base: string, auth: string | undefined) => {
        const target = joinTo(upstreamBase(base), "/v1/models")
        return client.execute(HttpClientRequest.get(target.origin + target.path).pipe(
          auth === undefined ? (r) => r : HttpClientRequest.setHeader("authorization", auth)
        )).pipe(
          Effect.flatMap(HttpClientResponse.schemaBodyJson(ModelList)),
          Effect.scoped,
          Effect.timeout("10 seconds"),
          Effect.mapError(() => new UpstreamFailed({ reason: `model listing from the ${upstream} upstream failed` })),
          Effect.map((list) => list.data)
        )
      }
      const primary = yield* Effect.cachedWithTTL(fetch("primary", config.upstream, Option.getOrUndefined(authorization)), "30 seconds")
      const list = (clientAuthorization: string | undefined) =>
        Option.match(config.passthroughUpstream, {
          onNone: (): Effect.Effect<ReadonlyArray<Model>, UpstreamFailed> => primary,
          onSome: (base): Effect.Effect<ReadonlyArray<Model>, UpstreamFailed> =>
            // A passthrough upstream that is down serves no models: the listing shows the primary's alone.
            Effect.map(Effect.all([primary, Effect.orElseSucceed(fetch("passthrough", base, clientAuthorization), () => [])], { concurrency: 2 }), ([own, other]) => {
              const seen = new Set(own.map((m) => m.id))
              return [...own, ...other.filter((m) => !seen.has(m.id))]
            })
        }).pipe(Effect.map((data) => ({ object: "list" as const, data })))
      return ModelCatalog.of({ list })
    })
  )
}
