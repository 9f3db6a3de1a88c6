import { createHash } from "node:crypto"
import { Option, Redacted } from "effect"

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex")

/**
 * Replicas that call the same upstream with the same key share a limit: by default its name is a
 * hash of the upstream URL and of a hash of the API key, so the key itself never reaches Redis.
 */
export const defaultLimitKey = (upstream: string, apiKey: Option.Option<Redacted.Redacted<string>>): string =>
  sha256(`${upstream}\n${Option.match(apiKey, { onNone: () => "", onSome: (k) => sha256(Redacted.value(k)) })}`).slice(0, 24)

/** The Redis keys of one shared limit; the hash tag keeps them in one Redis Cluster slot. */
export const redisKeys = (limitKey: string) => {
  const base = `nvsc:{${limitKey}}:`
  return {
    bucket: `${base}bucket`,
    params: `${base}params`,
    window: `${base}window`,
    evidence: `${base}evidence`,
    /** One per priority above low, by rank (urgent, high, normal). */
    claims: [`${base}claims:0`, `${base}claims:1`, `${base}claims:2`] as const,
    replicas: `${base}replicas`,
    leader: `${base}leader`,
    lawState: `${base}law`
  }
}

export type RedisKeys = ReturnType<typeof redisKeys>
