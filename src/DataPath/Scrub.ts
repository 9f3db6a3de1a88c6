import { Transform, type TransformCallback } from "node:stream"

/**
 * Masks every occurrence of `secret` in a byte stream with as many `*` (so `content-length`
 * stays true), also when an occurrence straddles two chunks: the last `secret.length - 1` bytes
 * of each chunk wait for the next one. For relayed error bodies, which an upstream may fill with
 * the `Authorization` it received.
 */
export const scrubStream = (secret: Buffer): Transform => {
  let held: Buffer = Buffer.alloc(0)
  const keep = secret.length - 1
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      const joined = scrub(held.length === 0 ? chunk : Buffer.concat([held, chunk]), secret)
      const cut = Math.max(0, joined.length - keep)
      held = joined.subarray(cut)
      done(null, joined.subarray(0, cut))
    },
    flush(done: TransformCallback) {
      done(null, held)
    }
  })
}

/** Masks every occurrence of `secret` in `bytes`, in place. */
export const scrub = (bytes: Buffer, secret: Buffer): Buffer => {
  if (secret.length === 0) return bytes
  for (let at = bytes.indexOf(secret); at !== -1; at = bytes.indexOf(secret, at + secret.length)) {
    bytes.fill(0x2a, at, at + secret.length)
  }
  return bytes
}
