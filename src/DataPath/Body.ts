import { Either } from "effect"
import type { IncomingMessage } from "node:http"
import type { Readable } from "node:stream"
import { BodyTooLarge, ClientGone, InvalidJson } from "../Common/Errors.js"

/** Buffers the request body; refuses by `content-length` before reading, or as soon as the limit is crossed. */
export const readBody = (req: IncomingMessage, limitBytes: number): Promise<Either.Either<Buffer, BodyTooLarge | ClientGone>> =>
  new Promise((resolve) => {
    const declared = Number(req.headers["content-length"])
    if (declared > limitBytes) {
      resolve(Either.left(new BodyTooLarge({ limitBytes })))
      return
    }
    const chunks: Array<Buffer> = []
    let size = 0
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limitBytes) {
        cleanup()
        req.pause()
        resolve(Either.left(new BodyTooLarge({ limitBytes })))
        return
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resolve(Either.right(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)))
    }
    // An aborted upload never ends: it closes (or errors) instead.
    const onGone = () => {
      cleanup()
      resolve(Either.left(new ClientGone()))
    }
    const cleanup = () => {
      req.off("data", onData)
      req.off("end", onEnd)
      req.off("close", onGone)
      req.off("error", onGone)
    }
    req.on("data", onData)
    req.on("end", onEnd)
    req.on("close", onGone)
    req.on("error", onGone)
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
