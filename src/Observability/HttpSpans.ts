import { Exit } from "effect"
import type { IncomingMessage } from "node:http"

// OpenTelemetry HTTP and GenAI semantic conventions for the proxy's spans: names and attributes only.

const routes = new Map([
  ["/v1/chat/completions", "chat"],
  ["/v1/completions", "text_completion"],
  ["/v1/embeddings", "embeddings"],
  ["/v1/models", undefined]
])

/** `http.route`: the low-cardinality template a path matched. */
export const routeOf = (path: string): string =>
  routes.has(path) ? path : path.startsWith("/v1/models/") ? "/v1/models/{model}" : "/v1/*"

/** `gen_ai.operation.name` for the routes that call a model. */
export const operationOf = (route: string): string | undefined => routes.get(route)

/** Attributes of the server span known when the request arrives. */
export const serverAttributes = (req: IncomingMessage, path: string, route: string): Record<string, unknown> => {
  const [host, port] = splitHost(req.headers.host) ?? [req.socket.localAddress ?? "", req.socket.localPort]
  const operation = operationOf(route)
  return {
    "http.request.method": req.method ?? "GET",
    "url.path": path,
    "url.scheme": "http",
    "http.route": route,
    "server.address": host,
    ...(port === undefined ? {} : { "server.port": port }),
    "client.address": req.socket.remoteAddress ?? "",
    ...(req.headers["user-agent"] === undefined ? {} : { "user_agent.original": req.headers["user-agent"] }),
    ...(operation === undefined ? {} : { "gen_ai.operation.name": operation })
  }
}

/** Attributes of the client span: where the call went, never with credentials. */
export const clientAttributes = (method: string, url: URL): Record<string, unknown> => ({
  "http.request.method": method,
  "server.address": url.hostname,
  "server.port": Number(url.port || (url.protocol === "https:" ? 443 : 80)),
  "url.full": `${url.protocol}//${url.host}${url.pathname}${url.search}`
})

/**
 * How a span ends: ERROR for 5xx and for the 429s a client receives on the server side, for any
 * failure or status >= 400 on the client side (the conventions' rule); unset-as-OK otherwise.
 */
export const endExit = (kind: "server" | "client", status: number): Exit.Exit<void, HttpStatusError> =>
  status === 0 || status >= 500 || (status >= 400 && (kind === "client" || status === 429))
    ? Exit.fail(new HttpStatusError(status))
    : Exit.void

/** `error.type` for a failed exchange. */
export const errorType = (status: number): string | undefined => (status === 0 ? "connection_error" : status >= 400 ? String(status) : undefined)

/** The span's status message and exception event: the status alone, no stack. */
export class HttpStatusError extends Error {
  constructor(status: number) {
    super(status === 0 ? "no HTTP answer" : `HTTP ${status}`)
    this.name = "HttpStatusError"
    this.stack = `${this.name}: ${this.message}`
  }
}

function splitHost(host: string | undefined): [string, number | undefined] | undefined {
  if (host === undefined || host === "") return undefined
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(host)
  return match === null ? undefined : [match[1]!, match[2] === undefined ? undefined : Number(match[2])]
}
