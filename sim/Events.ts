/** A min-heap of timed callbacks; ties run in scheduling order, so a run is deterministic. */
export class Events {
  private readonly heap: Array<{ readonly at: number; readonly seq: number; readonly run: () => void }> = []
  private seq = 0
  now = 0

  at(at: number, run: () => void): void {
    const item = { at, seq: this.seq++, run }
    const h = this.heap
    h.push(item)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(h[i]!, h[parent]!)) break
      ;[h[i], h[parent]] = [h[parent]!, h[i]!]
      i = parent
    }
  }

  /** Runs events in time order until none is left before `end`. */
  runUntil(end: number): void {
    const h = this.heap
    while (h.length > 0 && h[0]!.at < end) {
      const top = h[0]!
      const last = h.pop()!
      if (h.length > 0) {
        h[0] = last
        let i = 0
        while (true) {
          const l = 2 * i + 1
          const r = l + 1
          let m = i
          if (l < h.length && before(h[l]!, h[m]!)) m = l
          if (r < h.length && before(h[r]!, h[m]!)) m = r
          if (m === i) break
          ;[h[i], h[m]] = [h[m]!, h[i]!]
          i = m
        }
      }
      this.now = top.at
      top.run()
    }
    this.now = end
  }
}

const before = (a: { at: number; seq: number }, b: { at: number; seq: number }) => a.at < b.at || (a.at === b.at && a.seq < b.seq)
