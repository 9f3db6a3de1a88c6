/**
 * Replaces the value of a JSON object's top-level `model` member in the original bytes, so
 * everything else reaches the upstream byte for byte (no float, big-integer or `-0` rewriting,
 * no re-serialisation of deep documents). Returns undefined when the member cannot be found as
 * a plain string (escaped key, not a string): the caller answers 400 rather than guess.
 */
export const replaceModel = (body: Buffer, model: string): Buffer | undefined => {
  const span = topLevelModel(body)
  return span === undefined
    ? undefined
    : Buffer.concat([body.subarray(0, span.start), Buffer.from(JSON.stringify(model)), body.subarray(span.end)])
}

interface Span {
  readonly start: number
  readonly end: number
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COLON = 0x3a
const KEY = Buffer.from("\"model\"")

/** The last top-level `"model": "<string>"` (JSON.parse keeps the last of duplicate keys). */
function topLevelModel(body: Buffer): Span | undefined {
  let depth = 0
  let found: Span | undefined
  let expectKey = false
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!
    if (c === QUOTE) {
      const end = stringEnd(body, i)
      if (end < 0) return undefined
      if (depth === 1 && expectKey && end - i === KEY.length && body.compare(KEY, 0, KEY.length, i, end) === 0) {
        const valueAt = skipSpace(body, skipSpace(body, end) + 1)
        if (body[skipSpace(body, end)] !== COLON) return undefined
        if (body[valueAt] !== QUOTE) {
          found = undefined // a non-string model: nothing to rewrite
        } else {
          const valueEnd = stringEnd(body, valueAt)
          if (valueEnd < 0) return undefined
          found = { start: valueAt, end: valueEnd }
          i = valueEnd - 1
          expectKey = false
          continue
        }
      }
      i = end - 1
      expectKey = false
    } else if (c === 0x7b || c === 0x5b) {
      depth++
      expectKey = c === 0x7b && depth === 1
    } else if (c === 0x7d || c === 0x5d) {
      depth--
    } else if (c === 0x2c) {
      expectKey = depth === 1
    }
  }
  return found
}

/** Index just past the closing quote of the string that opens at `at`, or -1. */
function stringEnd(body: Buffer, at: number): number {
  for (let i = at + 1; i < body.length; i++) {
    const c = body[i]!
    if (c === BACKSLASH) i++
    else if (c === QUOTE) return i + 1
  }
  return -1
}

function skipSpace(body: Buffer, at: number): number {
  let i = at
  while (i < body.length && (body[i] === 0x20 || body[i] === 0x0a || body[i] === 0x0d || body[i] === 0x09)) i++
  return i
}
