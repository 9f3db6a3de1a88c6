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

/** SPEC §3: gateway aliases are limited; other models are limited unless a passthrough upstream exists. */
export const classify = (model: string | undefined, config: RoutingConfig): Route => {
  if (model === undefined) return { limited: false, upstream: "primary", rewrittenModel: Option.none() }
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

export interface UpstreamTarget {
  readonly origin: string
  readonly path: string
}

export interface UpstreamBase {
  readonly origin: string
  /** Without a trailing slash; "" for a bare origin. */
  readonly basePath: string
}

/** Parsed once at start-up, not per request. */
export const upstreamBase = (base: string): UpstreamBase => {
  const url = new URL(base)
  return { origin: url.origin, basePath: url.pathname.replace(/\/+$/, "") }
}

/** Joins a base and a `/v1/...` request path without ever doubling `/v1`. */
export const joinTo = (base: UpstreamBase, pathAndQuery: string): UpstreamTarget => {
  const rest = base.basePath.endsWith("/v1") && /^\/v1(\/|\?|$)/.test(pathAndQuery) ? pathAndQuery.slice(3) : pathAndQuery
  return { origin: base.origin, path: `${base.basePath}${rest.startsWith("/") || rest.startsWith("?") || rest === "" ? rest : `/${rest}`}` }
}
