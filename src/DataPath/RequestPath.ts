import { Either } from "effect"
import { InvalidPath } from "../Common/Errors.js"

/**
 * Normalises an incoming request target. Absolute-URL targets, `..`/`.` segments (raw or
 * percent-encoded), encoded slashes and backslashes are refused rather than resolved, so
 * nothing outside `/v1/` can ever be forwarded.
 */
export const normalizePath = (target: string | undefined): Either.Either<string, InvalidPath> => {
  if (target === undefined || !target.startsWith("/") || target.startsWith("//")) {
    return Either.left(new InvalidPath({ reason: "request target must be an origin-form path" }))
  }
  const queryAt = target.indexOf("?")
  // Model ids hold a slash (`meta/llama-3.1-8b-instruct`) and SDKs send it as %2F: decoded here,
  // and only here, before the traversal checks below see the result.
  const rawPath = modelSlashes(queryAt === -1 ? target : target.slice(0, queryAt))
  const query = queryAt === -1 ? "" : target.slice(queryAt)
  if (/%2f|%5c|\\/i.test(rawPath)) return Either.left(new InvalidPath({ reason: "encoded or back slashes are not allowed" }))
  let decoded: string
  try {
    decoded = decodeURIComponent(rawPath)
  } catch {
    return Either.left(new InvalidPath({ reason: "malformed percent-encoding" }))
  }
  const segments = decoded.split("/").filter((s) => s !== "")
  if (segments.some((s) => s === ".." || s === ".")) {
    return Either.left(new InvalidPath({ reason: "dot segments are not allowed" }))
  }
  const collapsed = rawPath.split("/").filter((s) => s !== "").join("/")
  return Either.right(`/${collapsed}${query}`)
}

const modelsPrefix = /^\/v1\/+models\//

function modelSlashes(rawPath: string): string {
  const prefix = modelsPrefix.exec(rawPath)?.[0]
  return prefix === undefined ? rawPath : prefix + rawPath.slice(prefix.length).replace(/%2f/gi, "/")
}
