import { createHash } from "node:crypto"
import { Data, Duration, Effect } from "effect"
import type { Redis } from "ioredis"

/** Any failure to get an answer from Redis: refused, timed out, disconnected, a script error. */
export class RedisUnavailable extends Data.TaggedError("RedisUnavailable")<{ readonly reason: string }> {}

export interface RedisConnection {
  /** Runs a Lua script by its SHA, loading it first when Redis does not know it (a restarted Redis forgot it). */
  readonly script: (lua: string, keys: ReadonlyArray<string>, args: ReadonlyArray<string | number>) => Effect.Effect<unknown, RedisUnavailable>
  readonly ping: Effect.Effect<void, RedisUnavailable>
}

/** Each command gives up after this: a stopped Redis costs a request no more than this wait. */
export const commandTimeoutMs = 300

/**
 * One ioredis client for the scope's lifetime. Commands never queue while disconnected and never
 * retry (the limiter decides what a failure means); the client reconnects forever in the
 * background. Closing the scope disconnects at once, so a dead Redis cannot hold up shutdown.
 */
export const make = (url: string) =>
  Effect.gen(function*() {
    // Loaded only when a shared limit is configured: a single process never pays for it.
    const ioredis = yield* Effect.promise(() => import("ioredis"))
    const client: Redis = yield* Effect.acquireRelease(
      Effect.sync(() =>
        new ioredis.Redis(url, {
          lazyConnect: true,
          enableOfflineQueue: false,
          maxRetriesPerRequest: 0,
          commandTimeout: commandTimeoutMs,
          connectTimeout: 1000,
          retryStrategy: () => 250
        })),
      (c) => Effect.sync(() => c.disconnect())
    )
    // Connection problems surface as failed commands, named by the last connection error.
    let connectionError = ""
    client.on("error", (e: Error) => (connectionError = e.message))
    client.on("ready", () => (connectionError = ""))
    const reason = (e: unknown) => {
      const message = e instanceof Error ? e.message : String(e)
      return message.startsWith("Stream isn't writeable") ? `not connected${connectionError === "" ? "" : ` (${connectionError})`}` : message
    }
    // Fails (or, against a stopped Redis, never answers) when Redis is down at start; the client
    // keeps reconnecting either way, and the limiter starts in its failure mode.
    yield* Effect.ignore(Effect.timeout(Effect.tryPromise(() => client.connect()), Duration.seconds(1)))

    const shas = new Map<string, string>()
    const shaOf = (lua: string) => {
      let sha = shas.get(lua)
      if (sha === undefined) shas.set(lua, (sha = createHash("sha1").update(lua).digest("hex")))
      return sha
    }
    const call = <A>(f: () => Promise<A>) =>
      Effect.tryPromise({ try: f, catch: (e) => new RedisUnavailable({ reason: reason(e) }) }).pipe(
        // ioredis times each command out itself; this bounds anything that slips past it (a connect in progress).
        Effect.timeoutFail({ duration: Duration.millis(commandTimeoutMs * 2), onTimeout: () => new RedisUnavailable({ reason: "timed out" }) })
      )

    const connection: RedisConnection = {
      script: (lua, keys, args) =>
        call(() =>
          client.evalsha(shaOf(lua), keys.length, ...keys, ...args).catch((e: unknown) => {
            if (e instanceof Error && e.message.startsWith("NOSCRIPT")) return client.eval(lua, keys.length, ...keys, ...args)
            throw e
          })
        ),
      ping: Effect.asVoid(call(() => client.ping()))
    }
    return connection
  })
