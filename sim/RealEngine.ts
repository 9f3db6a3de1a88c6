import { Duration, Effect, Layer, Logger, Scope, TestClock, TestContext } from "effect"
import { Admission } from "../src/Admission/Admission.js"
import { ModelSlots } from "../src/Admission/Inflight.js"
import type { AdmissionRequest } from "../src/Admission/Permit.js"
import { PriorityQueue } from "../src/Admission/PriorityQueue.js"
import { RateLimiter } from "../src/Admission/RateLimiter.js"
import * as App from "../src/App.js"
import { SidecarConfig } from "../src/Config/SidecarConfig.js"
import { Metrics } from "../src/Observability/Metrics.js"
import type { Arrival } from "./Clients.js"
import type { LimiterConfig, RunInput } from "./Engine.js"
import { uniform } from "./Random.js"
import type { AttemptRecord, RatePoint, RequestRecord, Trace } from "./Trace.js"
import { netDelayMs, netJitterMs } from "./Upstream.js"

/**
 * The real admission code under test: `App.admission` (Admission, RateLimiter with its control
 * law, Dispatcher, PriorityQueue, Inflight, ModelSlots) on Effect's TestClock. Each simulated
 * client calls `acquire`, its call reaches the simulated upstream after the network delay, the
 * answer comes back after its latency, and the client hands it to `permit.finish`, following
 * `Retry` verdicts. Same scenarios, upstream, clients and report as the pure engine (Engine.ts).
 *
 * Set-up differences from the pure model, so both run the same situation: the queue holds
 * everyone (no full-queue policy), the low-priority wait and the queue timeout both equal the
 * clients' timeout (the pure model has no low-priority wait). "today" (no cap classifier) is
 * the real code handed no 429 body, so it cannot read the NIM cap wording.
 */
export type AsyncEngine = (limiter: LimiterConfig, input: RunInput) => Promise<Trace>

/** TestClock advances in steps of this much; rate and limit samples are taken after each. */
const driveStepMs = 1_000

interface Req {
  readonly arrival: Arrival
  queueMs: number
  outcome: RequestRecord["outcome"]
}

export const runReal: AsyncEngine = (limiter, input) => {
  const { epoch } = input
  const config = SidecarConfig.layerTest({
    rateRpm: limiter.baseRpm,
    bucketCapacity: limiter.bucketCapacity,
    maxRetries: limiter.maxRetries,
    maxInflight: limiter.maxInflight,
    rateControl: limiter.law,
    queueMax: 1_000_000,
    queueFullPolicy: "reject",
    queueTimeout: Duration.millis(input.clientTimeoutMs),
    lowTimeout: Duration.millis(input.clientTimeoutMs)
  })
  const layer = App.admission.pipe(Layer.provideMerge(Metrics.layer), Layer.provideMerge(config))

  const program = Effect.gen(function*() {
    const admission = yield* Admission
    const rateLimiter = yield* RateLimiter
    const slots = yield* ModelSlots
    const queue = yield* PriorityQueue
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    const scope = yield* Scope.Scope

    const requests: Array<Req> = []
    const attempts: Array<AttemptRecord> = []
    const rate: Array<RatePoint> = []
    const inflightLimit: Array<{ at: number; model: string; limit: number | undefined }> = []
    const lastLimit = new Map<string, number | undefined>()
    let retryAfterUntil = 0
    let sentDuringRetryAfter = 0
    let lastDispatchAt = epoch
    let backloggedSinceDispatch = false
    let longestStall = 0

    const sample = Effect.gen(function*() {
      const at = now() - epoch
      const s = yield* rateLimiter.snapshot
      const last = rate.at(-1)
      if (last === undefined || last.rpm !== s.effectiveRpm || last.mode !== s.mode || last.estimate !== s.quotaEstimateRpm) {
        rate.push({ at, rpm: s.effectiveRpm, mode: s.mode, estimate: s.quotaEstimateRpm })
      }
      const limits = yield* slots.limits
      for (const model of new Set([...lastLimit.keys(), ...Object.keys(limits)])) {
        const limit = limits[model]
        if (!lastLimit.has(model) || lastLimit.get(model) !== limit) {
          lastLimit.set(model, limit)
          inflightLimit.push({ at, model, limit })
        }
      }
    })

    const client = (req: Req) =>
      Effect.gen(function*() {
        let request: AdmissionRequest = { priority: req.arrival.priority, model: req.arrival.model }
        while (true) {
          const enqueuedAt = now()
          const permit = yield* Effect.either(admission.acquire(request))
          req.queueMs += now() - enqueuedAt
          if (permit._tag === "Left") {
            req.outcome = permit.left._tag === "RateLimited" ? "timeout" : "pending"
            return
          }
          const sentAt = now()
          if (sentAt - epoch >= input.warmupMs && backloggedSinceDispatch) longestStall = Math.max(longestStall, sentAt - lastDispatchAt)
          lastDispatchAt = sentAt
          if (sentAt < retryAfterUntil) sentDuringRetryAfter++
          backloggedSinceDispatch = (yield* queue.snapshot).size > 0
          yield* Effect.sleep(Duration.millis(netDelayMs + Math.round(uniform(input.rng, 0, netJitterMs))))
          const reachesAt = now()
          const answer = input.upstream.arrive(reachesAt, req.arrival.model)
          attempts.push({ at: reachesAt - epoch, status: answer.status, kind: answer.kind })
          yield* Effect.sleep(Duration.millis(answer.afterMs))
          if (answer.status === 200) input.upstream.done(req.arrival.model)
          if (answer.retryAfterMs !== undefined) retryAfterUntil = Math.max(retryAfterUntil, now() + answer.retryAfterMs)
          const verdict = yield* permit.right.finish({
            _tag: "Answered",
            status: answer.status,
            retryAfter: answer.retryAfterMs === undefined ? undefined : String(answer.retryAfterMs / 1000),
            body: limiter.concurrencyClassifier ? answer.body : undefined
          })
          if (answer.status === 429) yield* sample
          if (verdict._tag === "Retry") {
            request = verdict.next
            continue
          }
          req.outcome = answer.status === 200 ? "ok" : "relayed429"
          return
        }
      })

    // One feeder fiber starts each client at its arrival time: the TestClock holds few sleeps.
    const feeder = Effect.gen(function*() {
      for (const arrival of input.arrivals) {
        const wait = epoch + arrival.at - now()
        if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
        const req: Req = { arrival, queueMs: 0, outcome: "pending" }
        requests.push(req)
        yield* Effect.forkIn(client(req), scope)
      }
    })
    yield* Effect.forkIn(feeder, scope)

    yield* sample
    for (let t = 0; t < input.durationMs; t += driveStepMs) {
      yield* TestClock.adjust(Duration.millis(Math.min(driveStepMs, input.durationMs - t)))
      yield* sample
    }

    return {
      requests: requests.map((r) => ({ priority: r.arrival.priority, arrivedAt: r.arrival.at, outcome: r.outcome, queueMs: r.queueMs })),
      attempts,
      rate,
      inflightLimit,
      sentDuringRetryAfter,
      longestStall
    } satisfies Trace
  })

  return Effect.gen(function*() {
    // The limiter reads the clock when it is built: the run starts at the scenario's epoch.
    yield* TestClock.setTime(epoch)
    return yield* program.pipe(Effect.scoped, Effect.provide(layer))
  }).pipe(
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none)),
    Effect.provide(TestContext.TestContext),
    withFastYields
  )
}

/**
 * TestClock lets every fiber settle before each wake-up by waiting on three `setTimeout(0)`s,
 * which Node clamps to 1 ms: about 3 ms of wall clock per simulated event, minutes per run.
 * While a run lasts, a 0–1 ms timer becomes `setImmediate`: the same macrotask turn (pending
 * microtasks and I/O callbacks run first), without the 1 ms floor.
 */
function withFastYields<A, E>(effect: Effect.Effect<A, E>): Promise<A> {
  const original = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout }
  const immediates = new WeakSet<object>()
  globalThis.setTimeout = ((handler: (...args: Array<unknown>) => void, ms?: number, ...args: Array<unknown>) => {
    if (ms !== undefined && ms > 1) return original.setTimeout(handler, ms, ...args)
    const immediate = setImmediate(handler, ...args)
    immediates.add(immediate)
    return immediate
  }) as unknown as typeof setTimeout
  globalThis.clearTimeout = ((timer: Parameters<typeof clearTimeout>[0] | NodeJS.Immediate) => {
    if (typeof timer === "object" && timer !== null && immediates.has(timer)) return clearImmediate(timer as NodeJS.Immediate)
    return original.clearTimeout(timer as Parameters<typeof clearTimeout>[0])
  }) as typeof clearTimeout
  return Effect.runPromise(effect).finally(() => {
    globalThis.setTimeout = original.setTimeout
    globalThis.clearTimeout = original.clearTimeout
  })
}
