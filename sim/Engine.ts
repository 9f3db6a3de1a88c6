import { type ControlLaw, type ControlLawName, stepMs } from "../src/Admission/ControlLaw.js"
import { laws } from "../src/Admission/ControlLaws.js"
import { concurrencySignal, ModelConcurrency } from "../src/Admission/Laws/ConcurrencyCap.js"
import { type Arrival, type Priority, priorities } from "./Clients.js"
import { Events } from "./Events.js"
import { type Random, uniform } from "./Random.js"
import { LevelQueue } from "./LevelQueue.js"
import type { AttemptRecord, RatePoint, RequestRecord, Trace } from "./Trace.js"
import { type Answer, netDelayMs, netJitterMs, type Upstream } from "./Upstream.js"

/**
 * The limiter under test, as a plain discrete-event model of today's admission: token bucket
 * (capacity, refill at the law's rate, Retry-After pause), the control law, a priority queue
 * (urgent > high > normal > low, FIFO by arrival; a retried request keeps its place), internal
 * 429 retries, the in-flight bound and per-model in-flight limits. Phase 2 swaps this module for
 * the real Effect admission code on TestClock; scenarios, upstream, clients and report stay.
 */
export interface LimiterConfig {
  /** SIDECAR_RATE_CONTROL. */
  readonly law: ControlLawName
  readonly baseRpm: number
  readonly bucketCapacity: number
  readonly maxRetries: number
  readonly maxInflight: number
  /** Tell a concurrency-cap 429 from a rate 429 (the new classifier); false = today's sidecar. */
  readonly concurrencyClassifier: boolean
}

export interface RunInput {
  /** Epoch ms of the start: the law and a calendar-minute quota see real-looking time. */
  readonly epoch: number
  readonly durationMs: number
  /** Backlog and stall figures count from here. */
  readonly warmupMs: number
  readonly arrivals: ReadonlyArray<Arrival>
  readonly upstream: Upstream
  readonly clientTimeoutMs: number
  readonly rng: Random
}

export type Engine = (limiter: LimiterConfig, input: RunInput) => Trace

interface Req {
  readonly seq: number
  readonly priority: Priority
  readonly model: string
  readonly arrivedAt: number
  enqueuedAt: number
  queueMs: number
  attempts: number
  state: "queued" | "inflight" | "done"
  outcome: RequestRecord["outcome"]
}

export const run: Engine = (limiter, input) => {
  const ev = new Events()
  const { epoch } = input
  ev.now = epoch
  const law: ControlLaw = laws[limiter.law](limiter.baseRpm, epoch)
  const caps = new ModelConcurrency(limiter.maxInflight)
  const queues = new Map<Priority, LevelQueue<Req>>(priorities.map((p) => [p, new LevelQueue<Req>()]))
  const requests: Array<Req> = []
  const attempts: Array<AttemptRecord> = []
  const rate: Array<RatePoint> = []
  const inflightLimit: Array<{ at: number; model: string; limit: number | undefined }> = []
  const byModel = new Map<string, number>()
  const lastLimit = new Map<string, number | undefined>()
  let inflight = 0
  let tokens = limiter.bucketCapacity
  let capacity = limiter.bucketCapacity
  let rpm = law.effectiveRpm
  let updatedAt = epoch
  let retryAfterUntil = 0
  let sentDuringRetryAfter = 0
  let wakeAt = Infinity
  let lastDispatchAt = epoch
  let backloggedSinceDispatch = false
  let longestStall = 0

  const refill = (now: number) => {
    const next = Math.min(capacity, tokens + ((now - updatedAt) * rpm) / 60_000)
    const whole = Math.round(next)
    tokens = Math.abs(next - whole) < 1e-9 ? whole : next
    updatedAt = now
  }

  // The bucket reads the law after every evaluation and every throttled record.
  const syncLaw = (now: number) => {
    refill(now)
    rpm = law.effectiveRpm
    capacity = Math.min(limiter.bucketCapacity, law.burst)
    tokens = Math.min(tokens, capacity)
    const view = law.view(now)
    const last = rate.at(-1)
    if (last === undefined || last.rpm !== view.effectiveRpm || last.mode !== view.mode || last.estimate !== view.quotaEstimateRpm) {
      rate.push({ at: now - epoch, rpm: view.effectiveRpm, mode: view.mode, estimate: view.quotaEstimateRpm })
    }
  }

  const noteLimit = (model: string, now: number) => {
    const limit = caps.limitFor(model)
    const last = lastLimit.get(model)
    if (!lastLimit.has(model) || last !== limit) {
      lastLimit.set(model, limit)
      inflightLimit.push({ at: now - epoch, model, limit })
    }
  }

  const wake = (at: number) => {
    if (at >= wakeAt && wakeAt > ev.now) return
    wakeAt = at
    ev.at(at, () => pump(at))
  }

  const eligible = (): Req | undefined => {
    for (const p of priorities) {
      const r = queues.get(p)!.first((req) => {
        const limit = caps.limitFor(req.model)
        return limit === undefined || (byModel.get(req.model) ?? 0) < limit
      })
      if (r !== undefined) return r
    }
    return undefined
  }

  function pump(now: number): void {
    while (true) {
      const req = eligible()
      if (req === undefined) return
      const pausedUntil = Math.max(retryAfterUntil, law.dispatchAt(now))
      if (now < pausedUntil) return wake(pausedUntil)
      refill(now)
      if (tokens < 1) return wake(now + Math.max(1, Math.ceil(((1 - tokens) * 60_000) / rpm)))
      if (inflight >= limiter.maxInflight) return
      dispatch(req, now)
    }
  }

  function dispatch(req: Req, now: number): void {
    if (now - epoch >= input.warmupMs && backloggedSinceDispatch) longestStall = Math.max(longestStall, now - lastDispatchAt)
    lastDispatchAt = now
    tokens -= 1
    queues.get(req.priority)!.remove(req)
    req.state = "inflight"
    req.queueMs += now - req.enqueuedAt
    req.attempts++
    inflight++
    const busy = (byModel.get(req.model) ?? 0) + 1
    byModel.set(req.model, busy)
    caps.onDispatch(req.model, busy, now)
    noteLimit(req.model, now)
    law.dispatched(now)
    if (now < retryAfterUntil) sentDuringRetryAfter++
    backloggedSinceDispatch = eligible() !== undefined
    const reachesAt = now + netDelayMs + Math.round(uniform(input.rng, 0, netJitterMs))
    ev.at(reachesAt, () => {
      const answer = input.upstream.arrive(reachesAt, req.model)
      attempts.push({ at: reachesAt - epoch, status: answer.status, kind: answer.kind })
      ev.at(reachesAt + answer.afterMs, () => answered(req, answer, now, reachesAt + answer.afterMs))
    })
  }

  function answered(req: Req, answer: Answer, sentAt: number, now: number): void {
    inflight--
    const busy = byModel.get(req.model)!
    byModel.set(req.model, busy - 1)
    if (answer.status === 200) {
      input.upstream.done(req.model)
      law.record("ok", now, undefined, sentAt)
      caps.onSuccess(req.model)
      finish(req, "ok")
      return pump(now)
    }
    const cap = limiter.concurrencyClassifier ? concurrencySignal(answer.body) : undefined
    if (cap !== undefined) {
      law.uncounted(sentAt)
      caps.onCapSignal(req.model, busy, cap.limit, now)
      noteLimit(req.model, now)
    } else {
      law.record("throttled", now, answer.retryAfterMs, sentAt)
      syncLaw(now)
    }
    if (answer.retryAfterMs !== undefined) retryAfterUntil = Math.max(retryAfterUntil, now + answer.retryAfterMs)
    if (req.attempts <= limiter.maxRetries && req.state !== "done") {
      req.state = "queued"
      req.enqueuedAt = now
      queues.get(req.priority)!.requeue(req)
    } else {
      finish(req, "relayed429")
    }
    pump(now)
  }

  function finish(req: Req, outcome: RequestRecord["outcome"]): void {
    req.state = "done"
    req.outcome = outcome
  }

  for (const [seq, a] of input.arrivals.entries()) {
    ev.at(epoch + a.at, () => {
      const req: Req = {
        seq, priority: a.priority, model: a.model, arrivedAt: ev.now, enqueuedAt: ev.now,
        queueMs: 0, attempts: 0, state: "queued", outcome: "pending"
      }
      requests.push(req)
      queues.get(req.priority)!.push(req)
      ev.at(ev.now + input.clientTimeoutMs, () => {
        if (req.state !== "queued") return
        queues.get(req.priority)!.remove(req)
        req.queueMs += ev.now - req.enqueuedAt
        finish(req, "timeout")
      })
      pump(ev.now)
    })
  }
  for (let t = 0; t < input.durationMs; t += stepMs) {
    ev.at(epoch + t, () => {
      law.evaluate(ev.now)
      syncLaw(ev.now)
      pump(ev.now)
    })
  }
  ev.runUntil(epoch + input.durationMs)

  return {
    requests: requests.map((r) => ({ priority: r.priority, arrivedAt: r.arrivedAt - epoch, outcome: r.outcome, queueMs: r.queueMs })),
    attempts,
    rate,
    inflightLimit,
    sentDuringRetryAfter,
    longestStall
  }
}
