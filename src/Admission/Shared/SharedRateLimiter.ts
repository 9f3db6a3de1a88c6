import { randomBytes } from "node:crypto"
import { hostname } from "node:os"
import { Deferred, Duration, Effect, Either, Layer, Option, Ref, Schedule } from "effect"
import { SharedLimitUnavailable } from "../../Common/Errors.js"
import { type Priority, rank } from "../../Common/Priority.js"
import { maskUserinfo } from "../../Config/SettingCodecs.js"
import { SidecarConfig } from "../../Config/SidecarConfig.js"
import { Metrics } from "../../Observability/Metrics.js"
import { laws } from "../ControlLaws.js"
import { type BackendState, type BackendView, type LimiterSnapshot, RateLimiter } from "../RateLimiter.js"
import { evidence, LawLeader } from "./LawLeader.js"
import { defaultLimitKey, redisKeys } from "./LimitKeys.js"
import * as RedisConnection from "./RedisConnection.js"
import * as Scripts from "./Scripts.js"

/** Heartbeat, lease renewal, evidence flush and (on the leader) the law's drain: often enough that a 429 anywhere slows every replica within a second. */
export const syncMs = 500
/** A replica without a heartbeat for this long is no longer counted. */
export const heartbeatTtlMs = 5_000
/** The leader lease: a dead leader is replaced within this. */
export const leaseMs = 3_000
/** A waiter looks again at least this often: a rate raised elsewhere reaches it. */
const maxPollMs = 1_000
/** A claim outlives the waiter's next look by this much. */
const claimGraceMs = 1_000
/** Evidence kept while Redis cannot take it (and sends made meanwhile, for the window); older entries are dropped first. */
const maxPending = 5_000
/** What a closed limit tells clients: the next probe comes sooner than this. */
const closedRetryAfterMs = 1_000

/**
 * The `RateLimiter` of replicas sharing one limit through Redis (SIDECAR_REDIS_URL): one bucket,
 * one learned rate, priority across replicas (see Scripts.take). While Redis cannot be reached
 * (refused, or silent past the command timeout) SIDECAR_REDIS_FAILURE decides: `local` limits
 * this replica to its share with an in-process bucket, `closed` refuses limited requests. Every
 * sync probes Redis; the first answer switches back to shared.
 */
export const layer = (url: string) =>
  Layer.scoped(
    RateLimiter,
    Effect.gen(function*() {
      const config = yield* SidecarConfig
      const metrics = yield* Metrics
      const clock = yield* Effect.clock
      const redis = yield* RedisConnection.make(url)
      const local = yield* RateLimiter.make(config)
      const limitKey = Option.getOrElse(config.limitKey, () => defaultLimitKey(config.upstream, config.apiKey))
      const keys = redisKeys(limitKey)
      const bucketKeys = [keys.bucket, keys.params, keys.window, keys.evidence]
      const takeKeys = [...bucketKeys, ...keys.claims]
      const replicaId = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`
      const failedTo: BackendState = config.redisFailure === "local" ? "local_fallback" : "closed"
      const makeLaw = laws[config.rateControl]
      const leader = new LawLeader(makeLaw(config.rateRpm, clock.unsafeCurrentTimeMillis()), config.rateRpm, config.bucketCapacity, makeLaw)

      // This replica's own configuration: the defaults of a limit nobody has published yet.
      let baseRpm = config.rateRpm
      let capacity = config.bucketCapacity
      let state: BackendState = "shared"
      let healthy = false
      let lastError: string | null = null
      let isLeader = false
      let seq = 0
      // What the last sync saw; `offset` turns the local clock into Redis time.
      let offset = 0
      let replicas = 1
      let replicaIds: ReadonlyArray<string> = [replicaId]
      let params: Readonly<Record<string, string>> = {}
      let tokens = capacity
      // Evidence not yet reported to the leader: answers, and everything while Redis is away.
      let pending: Array<string> = []
      // Calls sent while Redis was away, not yet in its send window (Redis time, window member).
      let offline: Array<{ readonly at: number; readonly member: string }> = []
      // A replica back from its failure mode leaves a free lease to the last leader until then (local clock).
      let leaseFreeFrom = 0

      const redisNow = () => clock.unsafeCurrentTimeMillis() + offset
      const remember = (entry: string) => {
        pending.push(entry)
        if (pending.length > maxPending) pending.shift()
      }
      // Off shared, the fallback bucket limits and its law learns; the leader hears of it all on recovery.
      // Times handed out are Redis time (local clock + last offset) in every state.
      const sentOffline = (localAt: number) => {
        const at = localAt + offset
        remember(`d:${Math.round(at)}`)
        offline.push({ at, member: `${replicaId}|l${++seq}` })
        if (offline.length > maxPending) offline.shift()
        return at
      }
      // A call that never counted upstream leaves the sends kept for the window.
      const uncountOffline = (sentAt: number) => {
        forgetOffline(sentAt)
        remember(`u:${Math.round(sentAt)}`)
      }
      const forgetOffline = (sentAt: number) => {
        let found = -1
        for (let i = offline.length - 1; i >= 0; i--) {
          const d = Math.abs(offline[i]!.at - sentAt)
          if (d <= Scripts.matchMs && (found < 0 || d < Math.abs(offline[found]!.at - sentAt))) found = i
        }
        if (found >= 0) offline.splice(found, 1)
      }
      const seen = (now: number) => {
        offset = now - clock.unsafeCurrentTimeMillis()
      }
      const defaults = () => [baseRpm, capacity]
      const param = (name: string, fallback: number) => {
        const v = Number(params[name])
        return params[name] === undefined || params[name] === "" || !Number.isFinite(v) ? fallback : v
      }

      // Waiters sleep until their token is due or the state changes (Redis lost or back).
      const changed = yield* Ref.make(yield* Deferred.make<void>())
      const wake = Effect.flatMap(Deferred.make<void>(), (next) =>
        Effect.flatMap(Ref.getAndSet(changed, next), (previous) => Deferred.succeed(previous, undefined)))

      // The fallback bucket is kept at this replica's share all along, so a switch needs no change
      // of it: the last rate Redis published, split between the replicas last seen.
      let share = ""
      const keepShare = Effect.suspend(() => {
        const rateRpm = param("rpm", baseRpm) / replicas
        const cap = Math.max(1, Math.floor(param("capacity", capacity) / replicas))
        if (share === `${rateRpm}/${cap}`) return Effect.void
        share = `${rateRpm}/${cap}`
        return local.configure({ rateRpm, capacity: cap })
      })

      const switchTo = (to: BackendState, reason: string) =>
        Effect.suspend(() => {
          if (state === to) return Effect.void
          const from = state
          state = to
          return Effect.all([
            Effect.logWarning({ msg: "limit_backend_switched", from, to, reason, replicas, limit_key: limitKey, redis: maskUserinfo(url) }),
            metrics.backendSwitched(to),
            wake
          ], { discard: true })
        })

      const failed = (error: RedisConnection.RedisUnavailable) =>
        Effect.suspend(() => {
          healthy = false
          lastError = maskUserinfo(error.reason)
          return state === "shared" ? switchTo(failedTo, lastError) : Effect.void
        })

      /** Runs a script in shared mode; a failure switches to the failure mode and yields None. */
      const shared = <A>(effect: Effect.Effect<A, RedisConnection.RedisUnavailable>) =>
        Effect.flatMap(Effect.either(effect), (result) =>
          Either.isRight(result) ? Effect.succeed(Option.some(result.right)) : Effect.as(failed(result.left), Option.none<A>()))

      // 0 = taken; otherwise millis to wait. A waiter id registers a claim that holds lower priorities back.
      const takeShared = (priority: Priority, waiter: string) =>
        Effect.map(
          redis.script(Scripts.take, takeKeys, [...defaults(), rank[priority], waiter, `${replicaId}|${++seq}`, claimGraceMs]),
          (reply) => {
            const [wait = 1, now = redisNow(), milli = 0] = integers(reply)
            seen(now)
            tokens = milli / 1000
            return wait
          }
        )

      const withdraw = (priority: Priority, waiter: string) =>
        rank[priority] < 3 ? Effect.ignore(redis.script(Scripts.withdraw, keys.claims, [waiter])) : Effect.void

      const take = (priority: Priority = "normal"): Effect.Effect<void, SharedLimitUnavailable> => {
        const waiter = `${replicaId}|w${++seq}`
        return Effect.gen(function*() {
          for (;;) {
            const signal = yield* Ref.get(changed)
            if (state === "closed") return yield* new SharedLimitUnavailable({ retryAfterMs: closedRetryAfterMs })
            if (state === "local_fallback") {
              // A token taken here is never also taken in Redis: the local wait ends without one when Redis is back.
              if (yield* Effect.raceFirst(Effect.as(local.take(priority), true), Effect.as(Deferred.await(signal), false))) return
              continue
            }
            const wait = yield* shared(takeShared(priority, waiter))
            if (Option.isNone(wait)) continue
            if (wait.value === 0) return
            yield* Effect.raceFirst(Effect.sleep(Duration.millis(Math.min(wait.value, maxPollMs))), Deferred.await(signal))
          }
        }).pipe(Effect.onInterrupt(() => Effect.forkDaemon(withdraw(priority, waiter))))
      }

      const tryTake = (priority: Priority = "normal"): Effect.Effect<boolean> =>
        Effect.suspend(() => {
          if (state === "local_fallback") return local.tryTake(priority)
          if (state === "closed") return Effect.succeed(false)
          // A failure switches the state; the attempt is made once more there.
          return Effect.flatMap(shared(takeShared(priority, "")), Option.match({ onNone: () => tryTake(priority), onSome: (wait) => Effect.succeed(wait === 0) }))
        })

      const unsend = (sentAt: number | undefined, give: boolean, tell: boolean) =>
        Effect.asVoid(shared(redis.script(Scripts.refund, bucketKeys, [...defaults(), `${replicaId}|`, sentAt === undefined ? "" : Math.round(sentAt), give ? "1" : "0", tell ? "1" : "0"])))

      // Back from the failure mode: the sends made meanwhile join the window (a bucket an emptied
      // Redis lost starts from the tokens last seen), then the evidence goes to the leader.
      const recover = (lastTokens: number) =>
        Effect.gen(function*() {
          const since = redisNow() - Scripts.windowMs
          const sends = offline.filter((s) => s.at > since)
          const done = yield* shared(redis.script(Scripts.recover, [keys.bucket, keys.window], [String(Math.max(0, lastTokens)), ...sends.flatMap((s) => [Math.round(s.at), s.member])]))
          if (Option.isNone(done)) return false
          offline = []
          return yield* flush
        })

      /** Reports the pending evidence; false when Redis did not take it (it stays pending). */
      const flush: Effect.Effect<boolean> = Effect.suspend(() => {
        if (pending.length === 0) return Effect.succeed(true)
        const entries = pending
        pending = []
        return shared(redis.script(Scripts.report, [keys.evidence], entries)).pipe(
          Effect.tap(Option.match({ onSome: () => Effect.void, onNone: () => Effect.sync(() => (pending = [...entries, ...pending].slice(-maxPending))) })),
          Effect.map(Option.isSome)
        )
      })

      const backend = (): BackendView => ({
        kind: "redis",
        state,
        healthy,
        replicas,
        replicaIds,
        replicaId,
        leader: isLeader && state === "shared",
        limitKey,
        url: maskUserinfo(url),
        failureMode: config.redisFailure,
        lastError
      })

      const snapshot: Effect.Effect<LimiterSnapshot> = Effect.suspend(() => {
        if (state !== "shared") return Effect.map(local.snapshot, (s) => ({ ...s, backend: backend() }))
        const now = redisNow()
        const rpm = param("rpm", baseRpm)
        const estimate = param("estimate", Number.NaN)
        return Effect.succeed({
          tokens,
          capacity: param("capacity", capacity),
          baseRpm: param("baseRpm", baseRpm),
          effectiveRpm: rpm,
          law: params["law"] === "adr009" || params["law"] === "learning" ? params["law"] : config.rateControl,
          mode: params["mode"] ?? "open",
          rate429: param("rate429", 0),
          quotaEstimateRpm: Number.isNaN(estimate) ? null : estimate,
          nextTokenInMs: tokens >= 1 ? 0 : Math.ceil(((1 - tokens) * 60_000) / Math.max(rpm, 1e-9)),
          pausedForMs: Math.max(0, param("pausedUntil", 0) - now, param("holdUntil", 0) - now),
          backend: backend()
        })
      })

      // The leader drains all evidence, steps the law on Redis time and publishes its output.
      const lead = (now: number, fresh: boolean) =>
        Effect.gen(function*() {
          const drained = yield* shared(redis.script(Scripts.drainWithState, [keys.evidence, keys.lawState], []))
          if (Option.isNone(drained)) return
          const [entries, saved] = Array.isArray(drained.value) ? drained.value : []
          if (fresh) leader.restore(typeof saved === "string" ? saved : null, now)
          leader.feed(Array.isArray(entries) ? entries.filter((e): e is string => typeof e === "string") : [])
          const set = (name: string) => (params[name] === undefined ? undefined : Number(params[name]))
          leader.configure(set("setRpm"), set("setCapacity"), now)
          const { change, params: out, state: lawState } = leader.step(now)
          if (change !== undefined) {
            yield* Effect.logInfo({ msg: "control_state_changed", law: config.rateControl, from: change.from, to: change.to, effective_rpm: Math.round(change.effectiveRpm * 100) / 100, reason: change.reason, shared: true })
          }
          yield* shared(redis.script(Scripts.publish, [keys.params, keys.lawState], [lawState, ...Object.entries(out).flat()]))
        })

      // Heartbeat and probe: the registry, the lease, the published params; back to shared on the first answer.
      const sync = Effect.gen(function*() {
        const mayLead = isLeader || (state === "shared" && clock.unsafeCurrentTimeMillis() >= leaseFreeFrom)
        const reply = yield* Effect.either(redis.script(Scripts.sync, [keys.bucket, keys.params, keys.replicas, keys.leader], [...defaults(), replicaId, heartbeatTtlMs, leaseMs, mayLead ? "1" : "0"]))
        if (Either.isLeft(reply)) return yield* failed(reply.left)
        const [now, count, leading, ids, flat, milli] = Array.isArray(reply.right) ? reply.right : []
        if (typeof now !== "number") return
        seen(now)
        healthy = true
        lastError = null
        replicas = Math.max(1, Number(count))
        replicaIds = Array.isArray(ids) ? ids.filter((id): id is string => typeof id === "string") : replicaIds
        params = pairs(flat)
        yield* keepShare
        if (state !== "shared") {
          // Not back until what it sent meanwhile is in Redis (`tokens` is still the last seen
          // there); a lease freed meanwhile goes to the last leader first, whose law still holds
          // what it learned (an emptied Redis lost the saved one).
          if (!(yield* recover(tokens))) return
          if (!isLeader) leaseFreeFrom = clock.unsafeCurrentTimeMillis() + leaseMs
        }
        tokens = Number(milli) / 1000
        yield* switchTo("shared", "redis answered")
        yield* flush
        const wasLeader = isLeader
        isLeader = leading === 1 || leading === 2
        if (wasLeader && !isLeader) leader.resign()
        if (isLeader) yield* lead(now, leading === 2)
      })

      yield* sync
      // A defect in one sync (a reply it cannot read) must not end the heartbeat.
      yield* sync.pipe(
        Effect.catchAllDefect((defect) => Effect.logError({ msg: "limit_sync_failed", error: String(defect) })),
        Effect.repeat(Schedule.spaced(Duration.millis(syncMs))),
        Effect.forkScoped
      )
      // Leaving: out of the registry at once, and the lease free for the next leader.
      yield* Effect.addFinalizer(() => Effect.ignore(redis.script(Scripts.leave, [keys.replicas, keys.leader], [replicaId])))

      return RateLimiter.of({
        take,
        tryTake,
        dispatched: Effect.suspend(() => (state === "shared" ? Effect.succeed(redisNow()) : Effect.map(local.dispatched, sentOffline))),
        refund: (sentAt) =>
          Effect.suspend(() => {
            if (state === "shared") return unsend(sentAt, true, true)
            if (sentAt !== undefined) uncountOffline(sentAt)
            return local.refund(sentAt === undefined ? undefined : sentAt - offset)
          }),
        record: (outcome, sentAt, retryAfterMs) =>
          Effect.suspend(() => {
            remember(evidence.answered(outcome, sentAt, redisNow(), retryAfterMs))
            if (state !== "shared") {
              if (outcome === "throttled") forgetOffline(sentAt)
              return local.record(outcome, sentAt - offset, retryAfterMs)
            }
            // A 429 goes to the leader at once: every replica slows within one sync. The refused
            // call leaves the shared count, as the law's own count drops it.
            return outcome === "throttled" ? Effect.zipRight(flush, unsend(sentAt, false, false)) : Effect.void
          }),
        uncounted: (sentAt) =>
          Effect.suspend(() => {
            if (state === "shared") return unsend(sentAt, false, true)
            uncountOffline(sentAt)
            return local.uncounted(sentAt - offset)
          }),
        pauseFor: (millis) =>
          Effect.zipRight(
            local.pauseFor(millis),
            Effect.suspend(() => (state === "shared" ? Effect.asVoid(shared(redis.script(Scripts.pause, [keys.params], [Math.round(millis)]))) : Effect.void))
          ),
        configure: (change) =>
          Effect.suspend(() => {
            baseRpm = change.rateRpm ?? baseRpm
            capacity = change.capacity ?? capacity
            // The leader applies it for all replicas; until it publishes, the fallback share follows this replica's own values.
            if (change.rateRpm !== undefined) params = { ...params, rpm: String(Math.min(baseRpm, param("rpm", baseRpm))) }
            if (change.capacity !== undefined) params = { ...params, capacity: String(capacity) }
            const fields = [...(change.rateRpm === undefined ? [] : ["setRpm", change.rateRpm]), ...(change.capacity === undefined ? [] : ["setCapacity", change.capacity])]
            return Effect.zipRight(
              keepShare,
              fields.length === 0 || state !== "shared" ? Effect.void : Effect.asVoid(shared(redis.script(Scripts.setParams, [keys.params], fields)))
            )
          }),
        snapshot,
        retryAfterMs: Effect.suspend(() => {
          if (state === "closed") return Effect.succeed(closedRetryAfterMs)
          if (state === "local_fallback") return local.retryAfterMs
          return Effect.map(snapshot, (b) => Math.max(1000, b.nextTokenInMs, b.pausedForMs))
        })
      })
    })
  )

/** A script's integer reply; anything unreadable is undefined, so the caller's defaults apply. */
const integers = (reply: unknown): ReadonlyArray<number | undefined> =>
  Array.isArray(reply) ? reply.map((v) => (Number.isFinite(Number(v)) ? Number(v) : undefined)) : []

/** HGETALL's flat [field, value, …] as a record. */
const pairs = (flat: unknown): Readonly<Record<string, string>> => {
  const out: Record<string, string> = {}
  if (!Array.isArray(flat)) return out
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1])
  return out
}
