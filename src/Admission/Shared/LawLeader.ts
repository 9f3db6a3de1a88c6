import { type ControlChange, type ControlLaw, stepMs } from "../ControlLaw.js"

/**
 * The shared control law, run by whichever replica holds the leader lease. Every replica reports
 * its evidence (sends, answers, uncounted calls) to Redis; the leader feeds all of it to one law,
 * evaluates it every step on Redis time and publishes what the bucket script and the replicas'
 * snapshots read. Pure: time and evidence are handed in.
 */
export class LawLeader {
  private evaluatedAt = -Infinity
  /** The law holds what this replica learned while it led last; false once another replica has led since. */
  private current = true

  /** `fresh` makes the law a leader starts with when nothing was saved and its own has gone stale. */
  constructor(private law: ControlLaw, private baseRpm: number, private capacity: number, private readonly fresh?: (baseRpm: number, now: number) => ControlLaw) {}

  /**
   * A new leader continues with the learned state its predecessor saved. With nothing saved (an
   * emptied Redis) the replica that led last keeps its own law, which still holds what it learned.
   */
  restore(state: string | null, now = 0): void {
    if (state !== null) this.law.restore(state)
    else if (!this.current && this.fresh !== undefined) this.law = this.fresh(this.baseRpm, now)
    this.current = true
    this.evaluatedAt = -Infinity
  }

  /** Another replica holds the lease: what this one learned goes stale. */
  resign(): void {
    this.current = false
  }

  /**
   * Evidence entries as reported (see `evidence`); unreadable ones are skipped. They are fed in
   * time order (sends by when they were sent, answers by when they came): replicas report late,
   * and a replica back from a Redis outage reports the whole outage at once.
   */
  feed(entries: ReadonlyArray<string>): void {
    const read: Array<{ readonly kind: string; readonly first: number; readonly second: number; readonly retryAfter: number | undefined; readonly at: number }> = []
    for (const entry of entries) {
      const [kind = "", a, b, c] = entry.split(":")
      const first = Number(a)
      const second = Number(b)
      if (!Number.isFinite(first)) continue
      const answer = kind === "ok" || kind === "th"
      if (answer ? !Number.isFinite(second) : kind !== "d" && kind !== "u") continue
      const retryAfter = c === undefined || c === "" || !Number.isFinite(Number(c)) ? undefined : Number(c)
      read.push({ kind, first, second, retryAfter, at: answer ? second : first })
    }
    // Stable: entries of the same time keep the order they were reported in.
    read.sort((x, y) => x.at - y.at)
    for (const { first, kind, retryAfter, second } of read) {
      if (kind === "d") this.law.dispatched(first)
      else if (kind === "u") this.law.uncounted(first)
      else if (kind === "ok") this.law.record("ok", second, undefined, first)
      else this.law.record("throttled", second, retryAfter, first)
    }
  }

  /** An admin change made on any replica (published as setRpm / setCapacity) applies to the shared law. */
  configure(rpm: number | undefined, capacity: number | undefined, now: number): void {
    if (rpm !== undefined && rpm > 0 && rpm !== this.baseRpm) {
      this.baseRpm = rpm
      this.law.rebase(rpm, now)
    }
    if (capacity !== undefined && capacity >= 1) this.capacity = capacity
  }

  /** Evaluates when a step is due; returns the change of mode, if any, and what to publish. */
  step(now: number): { readonly change: ControlChange | undefined; readonly params: Readonly<Record<string, string>>; readonly state: string } {
    let change: ControlChange | undefined
    if (now - this.evaluatedAt >= stepMs) {
      this.evaluatedAt = now
      change = this.law.evaluate(now)
    }
    const view = this.law.view(now)
    const params: Record<string, string> = {
      rpm: String(this.law.effectiveRpm),
      capacity: String(this.capacity),
      burst: String(Number.isFinite(this.law.burst) ? this.law.burst : this.capacity),
      holdUntil: String(this.law.dispatchAt(now)),
      // The learning law's own count (at most `level` calls in any 60.25 s), kept by the bucket script for all replicas.
      windowCap: String(view.law === "learning" ? Math.max(1, Math.floor(this.law.effectiveRpm)) : 0),
      law: view.law,
      mode: view.mode,
      baseRpm: String(this.baseRpm),
      rate429: String(view.rate429),
      estimate: view.quotaEstimateRpm === null ? "" : String(view.quotaEstimateRpm),
      publishedAt: String(now)
    }
    return { change, params, state: this.law.save() }
  }
}

/** Evidence entries, as the bucket scripts and the replicas report them. */
export const evidence = {
  answered: (outcome: "ok" | "throttled", sentAt: number, now: number, retryAfterMs?: number) =>
    outcome === "ok" ? `ok:${Math.round(sentAt)}:${Math.round(now)}` : `th:${Math.round(sentAt)}:${Math.round(now)}:${retryAfterMs === undefined ? "" : Math.round(retryAfterMs)}`
}
