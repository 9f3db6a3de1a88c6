import { Duration, Effect, LogLevel, Option, Redacted } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { configLayer, helpText, parseCommand, readConfigFile } from "../src/Cli.js"
import { settings } from "../src/Settings.js"
import { SidecarConfig } from "../src/SidecarConfig.js"

const load = (env: Record<string, string>, file?: Record<string, string>) => Effect.runPromise(SidecarConfig.load(env, file))
const problems = (env: Record<string, string>) =>
  Effect.runPromise(Effect.flip(SidecarConfig.load(env)).pipe(Effect.map((e) => e.problems)))

describe("SidecarConfig", () => {
  it("has the SPEC defaults with no configuration at all", async () => {
    const c = await load({})
    expect(c.host).toBe("127.0.0.1")
    expect([c.port, c.metricsPort]).toEqual([9190, 9191])
    expect(c.upstream).toBe("https://integrate.api.nvidia.com/v1")
    expect(c.rateRpm).toBe(40)
    expect(c.bucketCapacity).toBe(40)
    expect(Duration.toSeconds(c.timeout)).toBe(300)
    expect(Duration.toSeconds(c.queueTimeout)).toBe(300)
    expect(c.queueMax).toBe(500)
    expect(c.queueFullPolicy).toBe("passthrough")
    expect(Duration.toSeconds(c.lowTimeout)).toBe(2)
    expect([c.maxInflight, c.maxRetries, c.maxBodyBytes]).toEqual([64, 2, 10 * 1024 * 1024])
    expect(Duration.toSeconds(c.drainTimeout)).toBe(25)
    expect(c.logLevel).toBe(LogLevel.Info)
    expect(Option.isNone(c.apiKey)).toBe(true)
    expect(Option.isNone(c.adminToken)).toBe(true)
    expect(c.gatewayAliases).toEqual(["nvidia", "nvidia-gateway", "nvidiavx", "nvidiavx18088980513"])
  })

  it("takes the environment over the YAML file over the defaults", async () => {
    const c = await load({ SIDECAR_RATE_RPM: "90" }, { SIDECAR_RATE_RPM: "60", SIDECAR_QUEUE_MAX: "7" })
    expect(c.rateRpm).toBe(90)
    expect(c.queueMax).toBe(7)
    expect(c.bucketCapacity).toBe(40)
  })

  it("defaults the queue timeout to the request timeout", async () => {
    expect(Duration.toSeconds((await load({ SIDECAR_TIMEOUT: "12" })).queueTimeout)).toBe(12)
    expect(Duration.toSeconds((await load({ SIDECAR_TIMEOUT: "12", SIDECAR_QUEUE_TIMEOUT: "3" })).queueTimeout)).toBe(3)
  })

  it("maps the seed's SIDECAR_FALLBACK_PASSTHROUGH=false to reject unless a policy is set", async () => {
    expect((await load({ SIDECAR_FALLBACK_PASSTHROUGH: "false" })).queueFullPolicy).toBe("reject")
    expect((await load({ SIDECAR_FALLBACK_PASSTHROUGH: "false", SIDECAR_QUEUE_FULL_POLICY: "drop_lowest" })).queueFullPolicy).toBe("drop_lowest")
  })

  it("names every bad field in one error", async () => {
    const found = await problems({
      SIDECAR_PORT: "abc",
      SIDECAR_RATE_RPM: "-1",
      SIDECAR_QUEUE_FULL_POLICY: "sometimes",
      SIDECAR_UPSTREAM: "ftp://x",
      SIDECAR_LOG_LEVEL: "LOUD"
    })
    const fields = found.map((p) => p.split(":")[0])
    expect(fields).toEqual(expect.arrayContaining(["SIDECAR_PORT", "SIDECAR_RATE_RPM", "SIDECAR_QUEUE_FULL_POLICY", "SIDECAR_UPSTREAM", "SIDECAR_LOG_LEVEL"]))
    expect(found).toHaveLength(5)
  })

  it("refuses the same port for proxy and metrics", async () => {
    expect(await problems({ SIDECAR_PORT: "9000", SIDECAR_METRICS_PORT: "9000" })).toEqual(["SIDECAR_METRICS_PORT: must differ from SIDECAR_PORT"])
  })

  it("keeps the API key redacted and never echoes secrets in errors", async () => {
    const c = await load({ SIDECAR_API_KEY: "nvapi-super-secret" })
    expect(String(c.apiKey)).not.toContain("nvapi-super-secret")
    expect(JSON.stringify(c)).not.toContain("nvapi-super-secret")
    expect(Option.map(c.apiKey, Redacted.value)).toEqual(Option.some("nvapi-super-secret"))
  })
})

describe("CLI", () => {
  it("parses --config, --help and --version and reports unknown flags", () => {
    expect(parseCommand(["--config", "x.yaml"])).toEqual({ _tag: "Run", configFile: "x.yaml" })
    expect(parseCommand([])).toEqual({ _tag: "Run", configFile: undefined })
    expect(parseCommand(["--help"])._tag).toBe("Help")
    expect(parseCommand(["-v"])._tag).toBe("Version")
    expect(parseCommand(["--nope"])._tag).toBe("Invalid")
  })

  it("documents every setting with its default in --help", () => {
    const text = helpText()
    for (const [name, s] of Object.entries(settings)) {
      expect(text).toContain(name)
      if (s.default !== undefined) expect(text).toContain(`default: ${s.default}`)
    }
    expect(text).toContain("OTEL_EXPORTER_OTLP_ENDPOINT")
  })

  it("has every setting in the README's configuration table", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
    for (const name of Object.keys(settings)) expect(readme, name).toContain(`| \`${name}\` |`)
  })

  it("reads YAML settings by env name or short name and rejects unknown keys", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sidecar-config-"))
    const good = join(dir, "good.yaml")
    writeFileSync(good, "rate_rpm: 120\nSIDECAR_QUEUE_MAX: 9\nqueue_full_policy: reject\n")
    expect(await Effect.runPromise(readConfigFile(good))).toEqual({
      values: { SIDECAR_RATE_RPM: "120", SIDECAR_QUEUE_MAX: "9", SIDECAR_QUEUE_FULL_POLICY: "reject" },
      problems: []
    })
    const bad = join(dir, "bad.yaml")
    writeFileSync(bad, "rate_rpm: fast\nratelimit: 5\n")
    const error = await Effect.runPromise(Effect.flip(Effect.provide(SidecarConfig, configLayer(bad, {}))))
    expect(error.message).toContain("unknown setting \"ratelimit\"")
    expect(error.message).toContain("SIDECAR_RATE_RPM")
    const missing = await Effect.runPromise(Effect.flip(readConfigFile(join(dir, "absent.yaml"))))
    expect(missing.message).toContain("absent.yaml")
  })

  it("builds the config layer from file and environment together", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sidecar-config-"))
    const file = join(dir, "c.yaml")
    writeFileSync(file, "rate_rpm: 120\nbucket_capacity: 5\n")
    const c = await Effect.runPromise(Effect.provide(SidecarConfig, configLayer(file, { SIDECAR_BUCKET_CAPACITY: "6" })))
    expect([c.rateRpm, c.bucketCapacity]).toEqual([120, 6])
  })
})
