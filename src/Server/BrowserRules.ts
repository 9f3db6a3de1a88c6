import type { IncomingMessage } from "node:http"
import { RequestRefused } from "../Common/Errors.js"
import { jsonEndpoints } from "../DataPath/Routing.js"

/**
 * What a web page may do with the sidecar (SPEC §12): nothing unless the browser talks to it by
 * a loopback or allowed name (DNS rebinding), from its own origin or an allowlisted one (CSRF),
 * and, for JSON endpoints, with a JSON content type (a form post cannot set one without a
 * preflight). CORS answers only the allowlisted origins.
 */
export interface BrowserRules {
  /** Extra `Host` values accepted besides loopback names, lower case (`name` or `name:port`). */
  readonly allowedHosts: ReadonlyArray<string>
  /** Origins allowed to call from a browser (CORS); empty = CORS off. */
  readonly corsOrigins: ReadonlyArray<string>
}

export type Verdict =
  | { readonly _tag: "Allowed"; readonly cors: Readonly<Record<string, string>> }
  | { readonly _tag: "Refused"; readonly error: RequestRefused }

// Paths whose POST body must be JSON: what a cross-site form could otherwise send.
const jsonPaths: ReadonlySet<string> = new Set([...jsonEndpoints, "/api/admin/config"])

export const check = (req: IncomingMessage, path: string, rules: BrowserRules): Verdict => {
  const host = (req.headers.host ?? "").toLowerCase()
  if (!hostAllowed(host, rules)) {
    return refused("host_not_allowed", `Host "${host.slice(0, 100)}" is not a loopback name or in SIDECAR_ALLOWED_HOSTS`)
  }
  const origin = req.headers.origin
  const listed = origin !== undefined && rules.corsOrigins.includes(origin.toLowerCase())
  if (origin !== undefined && !listed && !sameOrigin(origin, host)) {
    return refused("origin_not_allowed", "Cross-origin requests are refused unless SIDECAR_CORS_ORIGINS lists the origin")
  }
  if (req.method === "POST" && jsonPaths.has(path) && !/\bjson\b/i.test(String(req.headers["content-type"] ?? ""))) {
    return refused("unsupported_media_type", "Send the body as JSON with Content-Type: application/json")
  }
  return { _tag: "Allowed", cors: listed ? corsHeaders(origin) : {} }
}

/** An `OPTIONS` request: a CORS preflight from an allowed origin, or a plain question about methods. */
export const preflight = (req: IncomingMessage, cors: Readonly<Record<string, string>>): Record<string, string> =>
  Object.keys(cors).length === 0
    ? { allow: "GET, POST, OPTIONS" }
    : {
      ...cors,
      "access-control-allow-methods": "GET, POST, OPTIONS",
      "access-control-allow-headers": String(req.headers["access-control-request-headers"] ?? "authorization, content-type"),
      "access-control-max-age": "600"
    }

const corsHeaders = (origin: string): Record<string, string> => ({
  "access-control-allow-origin": origin,
  "access-control-expose-headers": "x-request-id, retry-after, retry-after-ms, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests",
  vary: "Origin"
})

const refused = (reason: RequestRefused["reason"], detail: string): Verdict => ({ _tag: "Refused", error: new RequestRefused({ reason, detail }) })

function hostAllowed(host: string, rules: BrowserRules): boolean {
  if (host === "") return false
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":", 1)[0]!
  return name === "localhost" || name === "[::1]" || /^127(\.\d{1,3}){3}$/.test(name) || rules.allowedHosts.includes(host) || rules.allowedHosts.includes(name)
}

function sameOrigin(origin: string, host: string): boolean {
  try {
    return new URL(origin).host === host
  } catch {
    return false
  }
}
