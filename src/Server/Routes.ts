import { type Deferred, Effect, Either } from "effect"
import { randomUUID } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import { toErrorResponse } from "../Common/ErrorResponse.js"
import { makeControlRoutes } from "../Control/ControlRoutes.js"
import * as Bridge from "../DataPath/Bridge.js"
import { makeProxy } from "../DataPath/Proxy.js"
import { writeError } from "../DataPath/Reply.js"
import { normalizePath } from "../DataPath/RequestPath.js"
import { SidecarConfig } from "../Config/SidecarConfig.js"
import * as BrowserRules from "./BrowserRules.js"

/** The proxy port's routing table: `/v1/...` takes the Node data path, the rest are control Effects. */
export const makeRoutes = (draining: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    const proxy = yield* makeProxy
    const control = yield* makeControlRoutes(draining)
    const bridge = yield* Bridge.make
    const config = yield* SidecarConfig
    const rules = { allowedHosts: config.allowedHosts, corsOrigins: config.corsOrigins }

    return async (req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> => {
      // Every answer carries the request's id, the client's own or a new one, to join logs and SDK errors.
      const requestId = clientRequestId(req.headers["x-request-id"]) ?? randomUUID()
      res.setHeader("x-request-id", requestId)
      const url = req.url ?? "/"
      const path = url.split("?", 1)[0] ?? url
      // Browser rules come before anything else: a refused request spends nothing.
      const verdict = BrowserRules.check(req, path.replace(/\/{2,}/g, "/"), rules)
      if (verdict._tag === "Refused") return writeError(res, toErrorResponse(verdict.error))
      for (const name in verdict.cors) res.setHeader(name, verdict.cors[name]!)
      if (req.method === "OPTIONS") {
        res.writeHead(204, BrowserRules.preflight(req, verdict.cors))
        return void res.end()
      }
      if (path === "/v1" || path.startsWith("/v1/") || path.startsWith("/v1%") || !url.startsWith("/") || url.startsWith("//")) {
        return Either.match(normalizePath(url), {
          onLeft: (error) => writeError(res, toErrorResponse(error)),
          onRight: (clean) => proxy(req, res, clean, signal, requestId)
        })
      }
      const done = await bridge.run(control(req, res), signal)
      if (Either.isLeft(done) && done.left._tag === "Defect") writeError(res, toErrorResponse(done.left))
    }
  })

/** A client's `x-request-id`, when it is a sane token (printable, at most 200 characters). */
const clientRequestId = (value: string | ReadonlyArray<string> | undefined): string | undefined =>
  typeof value === "string" && /^[\x21-\x7e]{1,200}$/.test(value) ? value : undefined
