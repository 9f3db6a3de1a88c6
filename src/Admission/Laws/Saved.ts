/**
 * A law's state as plain JSON, so the next leader of a shared limit continues with what the last
 * one learned. Restoring reads defensively: a missing or malformed member keeps its current value.
 */
export type Saved = { readonly [key: string]: unknown }

export const parse = (json: string): Saved => {
  try {
    const value: unknown = JSON.parse(json)
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Saved) : {}
  } catch {
    return {}
  }
}

/** JSON has no infinities: they travel as null. */
export const finite = (n: number): number | null => (Number.isFinite(n) ? n : null)

export const num = (saved: Saved, key: string, fallback: number): number => {
  const v = saved[key]
  return typeof v === "number" ? v : v === null ? -Infinity : fallback
}

export const bool = (saved: Saved, key: string, fallback: boolean): boolean => {
  const v = saved[key]
  return typeof v === "boolean" ? v : fallback
}

export const child = (saved: Saved, key: string): Saved => {
  const v = saved[key]
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Saved) : {}
}

/** Fills `into` from a saved array of the same length; anything else leaves it as it is. */
export const fill = (saved: Saved, key: string, into: Float64Array): void => {
  const v = saved[key]
  if (!Array.isArray(v) || v.length !== into.length) return
  v.forEach((x: unknown, i) => {
    if (typeof x === "number") into[i] = x
  })
}
