import { Duration, Effect, LogLevel, Option, Redacted } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { configLayer, helpText, parseCommand, readConfigFile } from "../src/Config/Cli.js"
import { renderConfigTable } from "../src/Config/ConfigDocs.js"
import { settingNames, table, type SettingName } from "../src/Config/Settings.js"
import { SidecarConfig, unknownVariables } from "../src/Config/SidecarConfig.js"

const load = (env: Record<string, string>, file?: Record<string, string>) => Effect.runPromise(SidecarConfig.load(env, file))
// [] when the configuration is valid (a failed flip would carry the whole config into the report).
const problems = (env: Record<string, string>) =>
  Effect.runPromise(SidecarConfig.load(env).pipe(Effect.match({ onFailure: (e) => e.problems, onSuccess: () => [] })))

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
    expect(c.rateControl).toBe("learning")
    expect([c.corsOrigins, c.allowedHosts]).toEqual([[], []])
    expect([Duration.toSeconds(c.headersTimeout), Duration.toSeconds(c.bodyTimeout)]).toEqual([10, 30])
    expect([c.maxHeaders, c.upstreamConnections, c.maxClients]).toEqual([100, 256, 1000])
    expect(c.fairness).toBe(true)
  })

  it("reads the newer settings into typed fields", async () => {
    const c = await load({
      SIDECAR_RATE_CONTROL: "adr009",
      SIDECAR_CORS_ORIGINS: "https://App.Example.com, http://localhost:3000/",
      SIDECAR_ALLOWED_HOSTS: "Sidecar.internal,sidecar.internal:9190,[::1]:9190",
      SIDECAR_HEADERS_TIMEOUT: "2.5",
      SIDECAR_BODY_TIMEOUT: "7",
      SIDECAR_MAX_HEADERS: "50",
      SIDECAR_UPSTREAM_CONNECTIONS: "16",
      SIDECAR_FAIRNESS: "OFF",
      SIDECAR_MAX_CLIENTS: "20"
    })
    expect(c.rateControl).toBe("adr009")
    expect(c.corsOrigins).toEqual(["https://app.example.com", "http://localhost:3000"])
    expect(c.allowedHosts).toEqual(["sidecar.internal", "sidecar.internal:9190", "[::1]:9190"])
    expect([Duration.toMillis(c.headersTimeout), Duration.toMillis(c.bodyTimeout)]).toEqual([2500, 7000])
    expect([c.maxHeaders, c.upstreamConnections, c.maxClients]).toEqual([50, 16, 20])
    expect(c.fairness).toBe(false)
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
    const c = await load({ SIDECAR_API_KEY: "nvapi-super-secret", SIDECAR_ADMIN_TOKEN: "redis-pw-secret" })
    expect(String(c.apiKey)).not.toContain("nvapi-super-secret")
    expect(JSON.stringify(c)).not.toContain("nvapi-super-secret")
    expect(JSON.stringify(c)).not.toContain("redis-pw-secret")
    expect(Option.map(c.apiKey, Redacted.value)).toEqual(Option.some("nvapi-super-secret"))
  })

  it("never shows a secret in a message: bad secrets, credentials in bad URLs, unknown names", async () => {
    const fake = "nvapi-FAKE-0123456789"
    const found = await problems({
      SIDECAR_API_KEY: `${fake} `,
      SIDECAR_ADMIN_TOKEN: `${fake}\n`,
      SIDECAR_UPSTREAM: `ftp://user:${fake}@upstream.example`,
      SIDECAR_PASSTHROUGH_UPSTREAM: `https://${fake}@exa mple.com/v1`,
      SIDECAR_CORS_ORIGINS: `https://user:${fake}@app.example.com`
    })
    expect(found.map((p) => p.split(":")[0]).sort()).toEqual([
      "SIDECAR_ADMIN_TOKEN", "SIDECAR_API_KEY", "SIDECAR_CORS_ORIGINS", "SIDECAR_PASSTHROUGH_UPSTREAM", "SIDECAR_UPSTREAM"
    ])
    for (const p of found) {
      expect(p).not.toContain(fake)
      expect(p).not.toContain("FAKE")
    }
    expect(found).toContain("SIDECAR_API_KEY: expected printable ASCII without spaces (the value is secret and not shown)")
    expect(found).toContain("SIDECAR_UPSTREAM: expected an http(s) URL, got \"ftp://****@upstream.example\"")
    const warnings = unknownVariables({ SIDECAR_API_KEYS: fake })
    expect(warnings.map((w) => w.message).join("\n")).not.toContain(fake)
  })

  it("names the allowed values of every closed set, booleans and the log level included", async () => {
    expect(await problems({ SIDECAR_QUEUE_FULL_POLICY: "yolo" })).toEqual([
      "SIDECAR_QUEUE_FULL_POLICY: expected one of passthrough, reject, drop_lowest, got \"yolo\""
    ])
    expect(await problems({
      SIDECAR_LOG_LEVEL: "LOUD",
      SIDECAR_FALLBACK_PASSTHROUGH: "maybe",
      SIDECAR_FAIRNESS: "sometimes",
      SIDECAR_RATE_CONTROL: "pid"
    })).toEqual([
      "SIDECAR_RATE_CONTROL: expected one of adr009, learning, got \"pid\"",
      "SIDECAR_FALLBACK_PASSTHROUGH: expected one of true, false, 1, 0, yes, no, got \"maybe\"",
      "SIDECAR_FAIRNESS: expected one of on, off, got \"sometimes\"",
      "SIDECAR_LOG_LEVEL: expected one of TRACE, DEBUG, INFO, WARNING, ERROR, FATAL, NONE (any case), got \"LOUD\""
    ])
  })

  // One value each setting must refuse: a new setting without validation fails here.
  const refused: Record<SettingName, string> = {
    SIDECAR_HOST: "0.0.0.0 ", SIDECAR_PORT: "65536", SIDECAR_METRICS_PORT: "-1", SIDECAR_ALLOWED_HOSTS: "http://x.example",
    SIDECAR_CORS_ORIGINS: "https://app.example.com/path", SIDECAR_UPSTREAM: "integrate.api.nvidia.com",
    SIDECAR_PASSTHROUGH_UPSTREAM: "ws://x", SIDECAR_API_KEY: "two words", SIDECAR_GATEWAY_ALIASES: ",,",
    SIDECAR_UPSTREAM_CONNECTIONS: "0", SIDECAR_RATE_RPM: "0", SIDECAR_BUCKET_CAPACITY: "1.5", SIDECAR_RATE_CONTROL: "fast",
    SIDECAR_MAX_INFLIGHT: "many", SIDECAR_MAX_RETRIES: "-1",
    SIDECAR_REDIS_URL: "http://redis.internal:6379", SIDECAR_REDIS_FAILURE: "open", SIDECAR_LIMIT_KEY: "a key with spaces",
    SIDECAR_QUEUE_MAX: "1e400", SIDECAR_QUEUE_FULL_POLICY: "yolo", SIDECAR_FALLBACK_PASSTHROUGH: "2",
    SIDECAR_LOW_TIMEOUT: "0", SIDECAR_QUEUE_TIMEOUT: "Infinity", SIDECAR_FAIRNESS: "true", SIDECAR_MAX_CLIENTS: "1.5",
    SIDECAR_CLIENTS: "42",
    SIDECAR_TIMEOUT: "NaN", SIDECAR_HEADERS_TIMEOUT: "-2", SIDECAR_BODY_TIMEOUT: "soon", SIDECAR_MAX_HEADERS: "0",
    SIDECAR_MAX_BODY_BYTES: "10MB", SIDECAR_DRAIN_TIMEOUT: "0", SIDECAR_LOG_LEVEL: "verbose", SIDECAR_ADMIN_TOKEN: "tab\there"
  }

  it("has, for every setting, a doc, a YAML key, a default that validates and a validation that refuses", async () => {
    const yamlKeys = settingNames.map((name) => table[name].yaml)
    expect(new Set(yamlKeys).size).toBe(settingNames.length)
    expect(Object.keys(refused).sort()).toEqual([...settingNames].sort())
    for (const name of settingNames) {
      const s = table[name]
      expect(s.doc.length, name).toBeGreaterThan(5)
      expect(s.doc, name).not.toContain("|")
      expect(s.yaml, name).toMatch(/^[a-z][a-z0-9_]*$/)
      expect(s.schema.expected.length, name).toBeGreaterThan(3)
      if (s.default !== undefined) expect(await problems({ [name]: s.default }), name).toEqual([])
      const found = await problems({ [name]: refused[name] })
      expect(found, name).toHaveLength(1)
      expect(found[0], name).toMatch(new RegExp(`^${name}: expected ${escape(s.schema.expected)}`))
    }
  })

  it("warns about an unknown SIDECAR_ variable with the closest known name", () => {
    const warnings = unknownVariables({
      SIDECAR_RATE_PRM: "60",
      SIDECAR_RATE_RPM: "60",
      SIDECAR_QUEUE_MAX_SIZE: "5",
      sidecar_port: "1",
      SIDECAR_ZZZZZZZZZZ: "1",
      PATH: "/usr/bin",
      SIDECAR_UNSET: undefined
    })
    expect(warnings.map((w) => [w.name, w.suggestion])).toEqual([
      ["SIDECAR_QUEUE_MAX_SIZE", "SIDECAR_QUEUE_MAX"],
      ["SIDECAR_RATE_PRM", "SIDECAR_RATE_RPM"],
      ["SIDECAR_ZZZZZZZZZZ", undefined],
      ["sidecar_port", "SIDECAR_PORT"]
    ])
    expect(warnings[1]?.message).toBe("SIDECAR_RATE_PRM is not a setting (ignored); did you mean SIDECAR_RATE_RPM?")
    expect(warnings[2]?.message).toBe("SIDECAR_ZZZZZZZZZZ is not a setting (ignored)")
    expect(unknownVariables(Object.fromEntries(settingNames.map((n) => [n, "x"])))).toEqual([])
  })
})

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
}

describe("CLI", () => {
  it("parses --config, --help and --version and reports unknown flags", () => {
    expect(parseCommand(["--config", "x.yaml"])).toEqual({ _tag: "Run", configFile: "x.yaml" })
    expect(parseCommand([])).toEqual({ _tag: "Run", configFile: undefined })
    expect(parseCommand(["--help"])._tag).toBe("Help")
    expect(parseCommand(["-v"])._tag).toBe("Version")
    expect(parseCommand(["--nope"])._tag).toBe("Invalid")
  })

  it("documents every setting with its default and hot name on its own --help line", () => {
    const lines = helpText().split("\n")
    for (const name of settingNames) {
      const s = table[name]
      const line = lines.find((l) => l.startsWith(`  ${name} `))
      expect(line, name).toBeDefined()
      expect(line, name).toContain(s.doc)
      const fallback = s.defaultFrom ?? (s.default === "" ? "none" : s.default)
      if (fallback !== undefined) expect(line, name).toContain(`(default: ${fallback})`)
      else expect(line, name).not.toContain("default:")
      if (s.hot !== undefined) expect(line, name).toContain(`[hot: ${s.hot}]`)
      for (const choice of s.schema.choices ?? []) expect(line, name).toContain(choice)
    }
    expect(helpText()).toContain("OTEL_EXPORTER_OTLP_ENDPOINT")
    expect(helpText()).toContain("OTEL_SERVICE_NAME")
  })

  it("has every setting and its default in the README's configuration table, as generated", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
    for (const name of settingNames) {
      const s = table[name]
      const row = readme.split("\n").find((l) => l.startsWith(`| \`${name}\` |`))
      expect(row, name).toBeDefined()
      const fallback = s.defaultFrom !== undefined ? `= \`${s.defaultFrom}\`` : s.default === undefined ? "(unset)" : s.default === "" ? "(empty)" : `\`${s.default}\``
      expect(row, name).toContain(`| ${fallback} |`)
    }
    // Run `node scripts/config-docs.mjs` after changing src/Settings.ts.
    expect(readme).toContain(renderConfigTable())
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
    expect(error.message).toContain("SIDECAR_RATE_RPM: expected a number > 0, got \"fast\"")
    const missing = await Effect.runPromise(Effect.flip(readConfigFile(join(dir, "absent.yaml"))))
    expect(missing.message).toContain("absent.yaml")
  })

  it("reads the clients: mapping from YAML and names a bad member by its path", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sidecar-config-"))
    const good = join(dir, "clients.yaml")
    writeFileSync(good, "rate_rpm: 40\nclients:\n  default: { max_queued: 20 }\n  agent-7: { rpm: 10, max_queued: 50, max_priority: normal }\n")
    const config = await Effect.runPromise(Effect.provide(SidecarConfig, configLayer(good, {})))
    expect(config.clients).toEqual({ default: { max_queued: 20 }, "agent-7": { rpm: 10, max_queued: 50, max_priority: "normal" } })

    const bad = join(dir, "bad-clients.yaml")
    writeFileSync(bad, "clients:\n  agent-7: { rpm: -1 }\n")
    const error = await Effect.runPromise(Effect.flip(Effect.provide(SidecarConfig, configLayer(bad, {}))))
    expect(error.problems).toEqual(["SIDECAR_CLIENTS: agent-7.rpm: expected a number > 0, got -1"])
    expect(await problems({ SIDECAR_CLIENTS: "{\"a\":{\"burst\":3}}" })).toEqual(["SIDECAR_CLIENTS: a.burst: not a known member (rpm, max_queued, max_priority)"])
    expect(await problems({ SIDECAR_CLIENTS: "{\"a b\":{}}" })).toEqual(["SIDECAR_CLIENTS: a b: not a client id (1-64 letters, digits or ._:@/+-)"])
    expect(await problems({ SIDECAR_CLIENTS: "{\"a\":{\"max_priority\":\"top\"}}" })).toEqual([
      "SIDECAR_CLIENTS: a.max_priority: expected one of urgent, high, normal, low, got \"top\""
    ])
  })

  it("suggests the closest name for an unknown YAML key, in the key's own style, and still refuses it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sidecar-config-"))
    const file = join(dir, "typo.yaml")
    writeFileSync(file, "rate_prm: 60\nSIDECAR_QUEUE_MAXX: 5\nqueue_max_size: 9\nzzzzzzzz: 1\nrate_rpm: 1\nSIDECAR_RATE_RPM: 2\napi_key: { nested: nvapi-FAKE }\n")
    const { problems: found } = await Effect.runPromise(readConfigFile(file))
    expect(found).toEqual([
      `${file}: unknown setting "rate_prm" (did you mean rate_rpm?)`,
      `${file}: unknown setting "SIDECAR_QUEUE_MAXX" (did you mean SIDECAR_QUEUE_MAX?)`,
      `${file}: unknown setting "queue_max_size" (did you mean queue_max? queue_max_size is its admin API name)`,
      `${file}: unknown setting "zzzzzzzz"`,
      `${file}: "SIDECAR_RATE_RPM" sets SIDECAR_RATE_RPM a second time`,
      "SIDECAR_API_KEY: expected a scalar value"
    ])
    const error = await Effect.runPromise(Effect.flip(Effect.provide(SidecarConfig, configLayer(file, {}))))
    expect(error.problems).toEqual(found)
    expect(error.message).not.toContain("nvapi-FAKE")
  })

  it("builds the config layer from file and environment together", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sidecar-config-"))
    const file = join(dir, "c.yaml")
    writeFileSync(file, "rate_rpm: 120\nbucket_capacity: 5\n")
    const c = await Effect.runPromise(Effect.provide(SidecarConfig, configLayer(file, { SIDECAR_BUCKET_CAPACITY: "6" })))
    expect([c.rateRpm, c.bucketCapacity]).toEqual([120, 6])
  })
})
