import { type ControlChange, type ControlLaw, stepMs } from "../ControlLaw.js"

/**
 * The shared control law, run by whichever replica holds the leader lease. Every replica reports
 * its evidence (sends, answers, uncounted calls) to Redis; the leader feeds all of it to one law,
 * evaluates it every step on Redis time and publishes what the bucket script and the replicas'
 * snapshots read. Pure: time and evidence are handed in.
 */
export class LawLeader {
  private evaluatedAt = -Infinity

  constructor(private readonly law: ControlLaw, private baseRpm: number, private capacity: number) {}

  /** A new leader continues with the learned state its predecessor saved. */
  restore(state: string | null): void {
    if (state !== null) this.law.restore(state)
    this.evaluatedAt = -Infinity
  }

  /** Evidence entries as reported (see `evidence`); unreadable ones are skipped. */
  feed(entries: ReadonlyArray<string>): void {
    for (const entry of entries) {
      const [kind, a, b, c] = entry.split(":")
      const first = Number(a)
      const second = Number(b)
      if (!Number.isFinite(first)) continue
      if (kind === "d") this.law.dispatched(first)
      else if (kind === "u") this.law.uncounted(first)
      else if (kind === "ok" && Number.isFinite(second)) this.law.record("ok", second, undefined, first)
      else if (kind === "th" && Number.isFinite(second)) {
        const retryAfter = c === undefined || c === "" ? undefined : Number(c)
        this.law.record("throttled", second, retryAfter !== undefined && Number.isFinite(retryAfter) ? retryAfter : undefined, first)
      }
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
