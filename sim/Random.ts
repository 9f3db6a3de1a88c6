/** A seeded PRNG (mulberry32): the same seed gives the same run, so the table is reproducible. */
export type Random = () => number

export const seeded = (seed: number): Random => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const uniform = (rng: Random, lo: number, hi: number): number => lo + (hi - lo) * rng()

export const exponential = (rng: Random, mean: number): number => -Math.log(1 - rng()) * mean
