import type { IncomingHttpHeaders } from "node:http"

// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
const responseDrop = new Set([
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
  "transfer-encoding", "upgrade"
])
// Upstream also needs none of: what undici recomputes or refuses (`expect`), and our own control header.
const requestDrop = new Set([...responseDrop, "host", "content-length", "expect", "x-priority"])

export type HeaderRecord = Record<string, string | Array<string>>

/** Headers to send upstream: hop-by-hop and `Connection`-listed headers removed, our request id set. */
export const requestHeaders = (incoming: IncomingHttpHeaders, requestId: string): HeaderRecord => {
  const out = filter(incoming, requestDrop)
  out["x-request-id"] = requestId
  return out
}

/** Upstream response headers to pass back to the client; the upstream's own request id keeps a name of its own. */
export const responseHeaders = (incoming: IncomingHttpHeaders | Record<string, string | Array<string> | undefined>): HeaderRecord => {
  const out = filter(incoming, responseDrop)
  const upstreamId = out["x-request-id"]
  if (upstreamId !== undefined) {
    delete out["x-request-id"]
    out["x-upstream-request-id"] = upstreamId
  }
  return out
}

function filter(incoming: Record<string, string | Array<string> | undefined>, drop: ReadonlySet<string>): HeaderRecord {
  const listed = connectionListed(incoming.connection)
  const out: HeaderRecord = {}
  for (const name in incoming) {
    const value = incoming[name]
    if (value === undefined || drop.has(name) || listed.has(name)) continue
    out[name] = value
  }
  return out
}

function connectionListed(value: string | ReadonlyArray<string> | undefined): ReadonlySet<string> {
  if (value === undefined) return empty
  const joined = typeof value === "string" ? value : value.join(",")
  return new Set(joined.split(",").map((h) => h.trim().toLowerCase()).filter((h) => h !== ""))
}

const empty: ReadonlySet<string> = new Set()
