import { Either } from "effect"
import type { IncomingMessage } from "node:http"
import type { Readable } from "node:stream"
import { BodyTooLarge, ClientGone, InvalidJson, RequestTimeout } from "../Common/Errors.js"

export interface BodyLimits {
  readonly maxBytes: number
  /** Longest silence while the body arrives (408). */
  readonly idleMs: number
}

/**
 * Buffers the request body. Past `maxBytes` it keeps reading and discarding (up to a budget)
 * so the client, still uploading, is there to read the 413 instead of a broken pipe; a body
 * declared far larger than the budget is refused before reading. A stalled upload gets 408.
 */
export const readBody = (req: IncomingMessage, limits: BodyLimits): Promise<Either.Either<Buffer, BodyTooLarge | RequestTimeout | ClientGone>> =>
  new Promise((resolve) => {
    const drainBudget = Math.min(64 * 1024 * 1024, 4 * limits.maxBytes)
    // Built only when needed: an Effect error captures a stack trace.
    const tooLarge = () => new BodyTooLarge({ limitBytes: limits.maxBytes })
    if (Number(req.headers["content-length"]) > limits.maxBytes + drainBudget) {
      resolve(Either.left(tooLarge()))
      return
    }
    const chunks: Array<Buffer> = []
    let size = 0
    const settle = (outcome: Either.Either<Buffer, BodyTooLarge | RequestTimeout | ClientGone>) => {
      req.off("data", onData)
      req.off("end", onEnd)
      req.off("close", onGone)
      req.off("error", onGone)
      // setTimeout(0) stops the timer but leaves its listener, which would keep this closure
      // (and the chunks) alive as long as the request: a queued request waits for minutes.
      req.off("timeout", onIdle)
      req.setTimeout(0)
      resolve(outcome)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size <= limits.maxBytes) chunks.push(chunk)
      else if (size > limits.maxBytes + drainBudget) settle(Either.left(tooLarge()))
    }
    const onEnd = () =>
      settle(size > limits.maxBytes ? Either.left(tooLarge()) : Either.right(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)))
    // An aborted upload never ends: it closes (or errors) instead.
    const onGone = () => settle(Either.left(new ClientGone()))
    req.on("data", onData)
    req.on("end", onEnd)
    req.on("close", onGone)
    req.on("error", onGone)
    const onIdle = () => settle(Either.left(new RequestTimeout({ phase: "body" })))
    req.setTimeout(limits.idleMs, onIdle)
  })

export interface JsonBody {
  readonly json: Record<string, unknown> | undefined
  readonly model: string | undefined
}

/** Parses a JSON request body far enough to read `model`. */
export const parseJsonBody = (body: Buffer): Either.Either<JsonBody, InvalidJson> => {
  let json: unknown
  try {
    json = JSON.parse(body.toString("utf8"))
  } catch (error) {
    return Either.left(new InvalidJson({ reason: error instanceof Error ? error.message : "parse error" }))
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Either.left(new InvalidJson({ reason: "expected a JSON object" }))
  }
  const record = json as Record<string, unknown>
  return Either.right({ json: record, model: typeof record.model === "string" ? record.model : undefined })
}

/**
 * Reads a small upstream answer whole (a 429 that admission must rule on), keeping at most
 * `limitBytes`; a failed or longer body yields what arrived.
 */
export const readSmall = (body: Readable, limitBytes = 1024 * 1024): Promise<Buffer> =>
  new Promise((resolve) => {
    const chunks: Array<Buffer> = []
    let size = 0
    const done = () => {
      body.off("data", onData)
      resolve(Buffer.concat(chunks, size))
    }
    const onData = (chunk: Buffer) => {
      const room = limitBytes - size
      chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk)
      size += Math.min(room, chunk.length)
      if (size >= limitBytes) {
        body.destroy()
        done()
      }
    }
    body.on("data", onData)
    body.once("end", done)
    body.once("error", done)
    body.once("close", done)
  })
