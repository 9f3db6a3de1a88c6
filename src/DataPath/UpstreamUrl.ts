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
