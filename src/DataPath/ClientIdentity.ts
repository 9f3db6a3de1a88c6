import { createHash } from "node:crypto"
import type { IncomingHttpHeaders } from "node:http"
import { clientIdPattern } from "../Config/SettingCodecs.js"

/**
 * Who a request is from, for fair shares and per-client limits: its `X-Client-Id` when that is a
 * sane token (1-64 of `A-Za-z0-9._:@/+-`); else `key-` and 16 hex digits of the SHA-256 of its own
 * `Authorization` (the credential itself is neither kept nor logged); else `ip-` and its address.
 */
export const clientIdOf = (headers: IncomingHttpHeaders, peer: string | undefined): string => {
  const named = headers["x-client-id"]
  const id = typeof named === "string" ? named.trim() : undefined
  if (id !== undefined && clientIdPattern.test(id)) return id
  const auth = headers.authorization
  if (typeof auth === "string" && auth !== "") return `key-${createHash("sha256").update(auth).digest("hex").slice(0, 16)}`
  return `ip-${peer ?? "unknown"}`
}
