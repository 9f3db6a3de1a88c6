import { Option } from "effect"

export interface Route {
  /** Queued and spends a token of the primary upstream's quota. */
  readonly limited: boolean
  readonly upstream: "primary" | "passthrough"
  /** The model id to forward, when it differs from the client's (gateway prefix stripped). */
  readonly rewrittenModel: Option.Option<string>
}

export interface RoutingConfig {
  readonly gatewayAliases: ReadonlyArray<string>
  readonly hasPassthrough: boolean
}

/**
 * SPEC §3 and §12: gateway aliases go to the primary upstream, other models to the passthrough
 * upstream when there is one. Whatever goes to the primary spends its key, so it is limited,
 * with or without a model (catch-all paths, multipart bodies, a non-string model).
 */
export const classify = (model: string | undefined, config: RoutingConfig): Route => {
  if (model === undefined) return { limited: true, upstream: "primary", rewrittenModel: Option.none() }
  const segments = model.split("/")
  const isGateway = config.gatewayAliases.includes((segments[0] ?? "").trim().toLowerCase())
  if (isGateway) {
    // `nvidia/org/model` carries a gateway prefix; `nvidia/model` is a real NVIDIA model id.
    const rewrittenModel = segments.length >= 3 ? Option.some(segments.slice(1).join("/")) : Option.none()
    return { limited: true, upstream: "primary", rewrittenModel }
  }
  return config.hasPassthrough
    ? { limited: false, upstream: "passthrough", rewrittenModel: Option.none() }
    : { limited: true, upstream: "primary", rewrittenModel: Option.none() }
}

/** Model endpoints whose body must be JSON (the browser rules also require a JSON content type there). */
export const jsonEndpoints: ReadonlySet<string> = new Set(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
