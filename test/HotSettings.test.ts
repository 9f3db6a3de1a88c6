import { Duration, Effect, Either, Option, Redacted, Schema } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { loadConfig } from "../src/Config/Cli.js"
import { diffConfig, reloadConfig } from "../src/Config/ConfigReload.js"
import { HotPatch, hotChanges, hotNames, patchProblem } from "../src/Config/HotSettings.js"
import { settingNames, table } from "../src/Config/Settings.js"
import { SidecarConfig } from "../src/Config/SidecarConfig.js"

const decode = (json: unknown) => Schema.decodeUnknownEither(HotPatch)(json)
const refusal = (json: unknown) => Either.match(decode(json), { onLeft: patchProblem, onRight: () => undefined })

describe("HotPatch (admin API)", () => {
  it("has exactly the hot settings, by their admin names", () => {
    expect([...hotNames].sort()).toEqual([
      "bucket_capacity", "clients", "fallback_enabled_passthrough", "low_priority_timeout", "queue_full_policy", "queue_max_size", "rate_rpm"
    ])
    expect(Object.keys(HotPatch.fields).sort()).toEqual([...hotNames].sort())
  })

  it("accepts each hot setting and refuses every other setting by any of its names", () => {
    const valid = { rate_rpm: 60, bucket_capacity: 5, queue_max_size: 0, queue_full_policy: "drop_lowest", fallback_enabled_passthrough: false, low_priority_timeout: 0.5, clients: { a: { rpm: 5 } } }
    for (const [name, value] of Object.entries(valid)) expect(Either.isRight(decode({ [name]: value })), name).toBe(true)
    expect(Either.isRight(decode(valid))).toBe(true)
    for (const name of settingNames.filter((n) => table[n].hot === undefined)) {
      for (const key of [name, table[name].yaml]) {
        expect(refusal({ [key]: table[name].default ?? "x" })?.field, key).toBe(key)
      }
    }
  })

  it("validates values with the settings' own schemas and names what is expected", () => {
    expect(refusal({ rate_rpm: -5 })).toEqual({ field: "rate_rpm", reason: "expected a number > 0, got -5" })
    expect(refusal({ bucket_capacity: 1.5 })).toEqual({ field: "bucket_capacity", reason: "expected an integer > 0, got 1.5" })
    expect(refusal({ queue_full_policy: "yolo" })).toEqual({
      field: "queue_full_policy",
      reason: "expected one of passthrough, reject, drop_lowest, got \"yolo\""
    })
    expect(refusal({ low_priority_timeout: "2" })).toEqual({ field: "low_priority_timeout", reason: "expected seconds > 0, got \"2\"" })
    expect(refusal({ fallback_enabled_passthrough: "no" })?.reason).toBe("expected one of true, false, 1, 0, yes, no, got \"no\"")
    expect(refusal([1])).toEqual({ field: "body", reason: `expected a JSON object of hot settings (${hotNames.join(", ")})` })
    expect(refusal({ rate_rmp: 5 })?.reason).toMatch(/^not a hot setting \(did you mean rate_rpm\?\); hot settings: rate_rpm, /)
  })

  it("turns a patch into typed changes; the policy wins over the seed's boolean", () => {
    const changes = (json: unknown) => hotChanges(Either.getOrThrow(decode(json)))
    expect(changes({ rate_rpm: 60, low_priority_timeout: 3 })).toEqual({ rateRpm: 60, lowTimeout: Duration.seconds(3) })
    expect(changes({ fallback_enabled_passthrough: false })).toEqual({ queueFullPolicy: "reject" })
    expect(changes({ fallback_enabled_passthrough: false, queue_full_policy: "drop_lowest" })).toEqual({ queueFullPolicy: "drop_lowest" })
    expect(changes({ queue_max_size: 0, bucket_capacity: 2 })).toEqual({ queueMax: 0, bucketCapacity: 2 })
    expect(changes({})).toEqual({})
  })
})

describe("SIGHUP reload", () => {
  const write = (text: string) => {
    const file = join(mkdtempSync(join(tmpdir(), "sidecar-reload-")), "sidecar.yaml")
    writeFileSync(file, text)
    return file
  }
  const start = (file: string, env: Record<string, string> = {}) => Effect.runPromise(loadConfig(file, env))
  const reload = (current: Parameters<typeof diffConfig>[0], file: string, env: Record<string, string> = {}) =>
    Effect.runPromise(Effect.either(reloadConfig(current, file, env)))

  it("returns the hot settings that changed as changes, and names those that need a restart", async () => {
    const file = write("rate_rpm: 40\nlow_timeout: 2\nport: 9000\nmetrics_port: 9001\n")
    const current = await start(file)
    writeFileSync(file, "rate_rpm: 60\nlow_timeout: 5\nport: 9002\nmetrics_port: 9001\nfallback_passthrough: false\nfairness: off\n")
    const result = Either.getOrThrow(await reload(current, file))
    expect(result.hot).toEqual({ rateRpm: 60, lowTimeout: Duration.seconds(5), queueFullPolicy: "reject" })
    expect(result.restartNeeded).toEqual(["SIDECAR_PORT", "SIDECAR_FAIRNESS"])
    expect(result.running.rateRpm).toBe(60)
    expect(result.running.port).toBe(9000)
    // The next reload of the same file, from what now runs, applies nothing more.
    expect((Either.getOrThrow(await reload(result.running, file))).hot).toEqual({})
  })

  it("changes nothing when the file is unchanged, and the environment still wins over the file", async () => {
    const file = write("rate_rpm: 40\nbucket_capacity: 3\n")
    const env = { SIDECAR_RATE_RPM: "90" }
    const current = await start(file, env)
    expect(Either.getOrThrow(await reload(current, file, env))).toMatchObject({ hot: {}, restartNeeded: [] })
    writeFileSync(file, "rate_rpm: 50\nbucket_capacity: 4\n")
    expect(Either.getOrThrow(await reload(current, file, env)).hot).toEqual({ bucketCapacity: 4 })
  })

  it("refuses an invalid file with ConfigInvalid naming the field, without showing secrets", async () => {
    const file = write("rate_rpm: 40\n")
    const current = await start(file)
    writeFileSync(file, "rate_rpm: -1\nqueue_full_policy: yolo\nadmin_token: nvapi-FAKE pw\n")
    const result = await reload(current, file)
    const error = Either.flip(result).pipe(Either.getOrThrow)
    expect(error._tag).toBe("ConfigInvalid")
    expect(error.problems).toEqual([
      "SIDECAR_RATE_RPM: expected a number > 0, got \"-1\"",
      "SIDECAR_QUEUE_FULL_POLICY: expected one of passthrough, reject, drop_lowest, got \"yolo\"",
      "SIDECAR_ADMIN_TOKEN: expected printable ASCII without spaces (the value is secret and not shown)"
    ])
    expect(error.message).not.toContain("nvapi-FAKE")
  })

  it("compares secrets, lists and durations by value", async () => {
    const current = await Effect.runPromise(SidecarConfig.load({ SIDECAR_API_KEY: "k1", SIDECAR_CORS_ORIGINS: "https://a.example" }))
    const same = await Effect.runPromise(SidecarConfig.load({ SIDECAR_API_KEY: "k1", SIDECAR_CORS_ORIGINS: "https://a.example/" }))
    expect(diffConfig(current, same)).toMatchObject({ hot: {}, restartNeeded: [] })
    const changed = { ...same, apiKey: Option.some(Redacted.make("k2")), timeout: Duration.seconds(301) }
    expect(diffConfig(current, changed).restartNeeded).toEqual(["SIDECAR_API_KEY", "SIDECAR_TIMEOUT"])
  })
})
