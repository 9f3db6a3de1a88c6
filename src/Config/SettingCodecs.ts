import { Duration, LogLevel, ParseResult, Redacted, Schema } from "effect"
import { priorities } from "../Common/Priority.js"

/**
 * How one setting is read: text (an environment variable or a YAML scalar) is parsed to a plain
 * value, which `value` validates and types. Admin patches are JSON, so they decode with `value` alone.
 */
export interface Codec<A, J> {
  readonly text: Schema.Schema<J, string>
  readonly value: Schema.Schema<A, J>
  /** What a valid value looks like; every message about a bad value is `expected <this>, got ...`. */
  readonly expected: string
  /** A closed set of values, listed in --help, .env.example and the README. */
  readonly choices?: ReadonlyArray<string>
  /** JSON text in the environment, a mapping in YAML; messages name the bad member's path. */
  readonly structured?: true
}

/** A value as shown in a message: quoted, credentials in URLs masked, long text cut. */
export const show = (actual: unknown): string => {
  const masked = typeof actual === "string" ? maskUserinfo(actual) : actual
  const text = JSON.stringify(masked) ?? String(masked)
  return text.length > 120 ? `${text.slice(0, 117)}...` : text
}

/** `https://****@host/v1`: any credentials in a URL hidden, for messages, log lines and the admin API. */
export const maskUserinfo = (text: string): string => text.replace(/\/\/[^/@\s]*@/g, "//****@")

const codec = <A, J>(
  text: Schema.Schema<J, string>,
  value: Schema.Schema<A, J>,
  expected: string,
  choices?: ReadonlyArray<string>
): Codec<A, J> => ({
  text,
  // One message for every way a value can be wrong, naming what is expected.
  value: value.annotations({ message: (issue) => ({ message: `expected ${expected}, got ${show(issue.actual)}`, override: true }) }),
  expected,
  ...(choices === undefined ? {} : { choices })
})

const parse = <J>(to: Schema.Schema<J>, f: (s: string) => J | undefined, back: (j: J) => string) =>
  Schema.transformOrFail(Schema.String, to, {
    strict: true,
    decode: (s, _, ast) => {
      const parsed = f(s)
      return parsed === undefined ? ParseResult.fail(new ParseResult.Type(ast, s)) : ParseResult.succeed(parsed)
    },
    encode: (j) => ParseResult.succeed(back(j))
  })

const NumberText = parse(Schema.Number, (s) => (s.trim() === "" || Number.isNaN(Number(s)) ? undefined : Number(s)), String)
const truthy = ["true", "1", "yes"]
const falsy = ["false", "0", "no"]
const BoolText = parse(Schema.Boolean, (s) => {
  const lower = s.toLowerCase()
  return truthy.includes(lower) ? true : falsy.includes(lower) ? false : undefined
}, (b) => (b ? "true" : "false"))
const OnOffText = parse(Schema.Boolean, (s) => {
  const lower = s.toLowerCase()
  return lower === "on" ? true : lower === "off" ? false : undefined
}, (b) => (b ? "on" : "off"))
const ListText = parse(Schema.Array(Schema.String), (s) => s.split(",").map((e) => e.trim()).filter((e) => e !== ""), (l) => l.join(","))

const numberWhere = (check: (n: number) => boolean) => Schema.Number.pipe(Schema.filter(check))
const stringWhere = (check: (s: string) => boolean) => Schema.String.pipe(Schema.filter(check))

export const port = codec(NumberText, numberWhere((n) => Number.isInteger(n) && n >= 0 && n <= 65535), "a port 0-65535")
export const positive = codec(NumberText, numberWhere((n) => Number.isFinite(n) && n > 0), "a number > 0")
export const positiveInt = codec(NumberText, numberWhere((n) => Number.isSafeInteger(n) && n > 0), "an integer > 0")
export const nonNegativeInt = codec(NumberText, numberWhere((n) => Number.isSafeInteger(n) && n >= 0), "an integer >= 0")
export const seconds = codec(
  NumberText,
  Schema.transform(numberWhere((n) => Number.isFinite(n) && n > 0), Schema.DurationFromSelf, {
    strict: true,
    decode: (s) => Duration.seconds(s),
    encode: (d) => Duration.toSeconds(d)
  }),
  "seconds > 0"
)

export const bool = codec(BoolText, Schema.Boolean, "one of true, false, 1, 0, yes, no")
export const onOff = codec(OnOffText, Schema.Boolean, "one of on, off", ["on", "off"])

export const oneOf = <const L extends readonly [string, ...Array<string>]>(...values: L) =>
  codec(Schema.String, Schema.Literal(...values), `one of ${values.join(", ")}`, values)

/** The seed's boolean for the queue-full choice: true = passthrough, false = reject. */
export const fallbackPassthrough = codec(
  BoolText,
  Schema.transform(Schema.Boolean, Schema.Literal("passthrough", "reject"), {
    strict: true,
    decode: (b) => (b ? "passthrough" as const : "reject" as const),
    encode: (policy) => policy === "passthrough"
  }),
  bool.expected
)

const levels: Record<string, LogLevel.LogLevel> = {
  TRACE: LogLevel.Trace,
  DEBUG: LogLevel.Debug,
  INFO: LogLevel.Info,
  WARNING: LogLevel.Warning,
  WARN: LogLevel.Warning,
  ERROR: LogLevel.Error,
  FATAL: LogLevel.Fatal,
  NONE: LogLevel.None
}
const levelNames = Object.keys(levels).filter((name) => name !== "WARN")
const LogLevelSelf = Schema.declare((u): u is LogLevel.LogLevel => Object.values(levels).includes(u as LogLevel.LogLevel))
export const logLevel = codec(
  Schema.String,
  Schema.transformOrFail(Schema.String, LogLevelSelf, {
    strict: true,
    decode: (s, _, ast) => {
      const level = levels[s.trim().toUpperCase()]
      return level === undefined ? ParseResult.fail(new ParseResult.Type(ast, s)) : ParseResult.succeed(level)
    },
    encode: (level) => ParseResult.succeed(level._tag.toUpperCase())
  }),
  `one of ${levelNames.join(", ")} (any case)`,
  levelNames
)

/** A listen address: anything without spaces; the server reports one it cannot bind. */
export const address = codec(Schema.String, stringWhere((s) => /^\S+$/.test(s)), "an address without spaces")

export const httpUrl = codec(Schema.String, stringWhere((s) => urlWith(s, ["http:", "https:"]) !== undefined), "an http(s) URL")

export const redisUrl = codec(Schema.String, stringWhere((s) => urlWith(s, ["redis:", "rediss:"]) !== undefined), "a redis:// or rediss:// URL")

export const limitKey = codec(Schema.String, stringWhere((s) => /^[A-Za-z0-9._:-]{1,100}$/.test(s)), "1-100 of A-Z a-z 0-9 . _ : -")

export const aliases = codec(
  ListText,
  Schema.transform(Schema.Array(Schema.String).pipe(Schema.minItems(1)), Schema.Array(Schema.String), {
    strict: true,
    decode: (list) => list.map((a) => a.toLowerCase()),
    encode: (list) => list
  }),
  "a comma-separated list of model prefixes"
)

const Origin = Schema.transform(stringWhere((s) => isOrigin(s)), Schema.String, {
  strict: true,
  decode: (s) => new URL(s).origin,
  encode: (s) => s
})
export const origins = codec(ListText, Schema.Array(Origin), "comma-separated origins like https://app.example.com")

const hostPattern = /^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)(:\d{1,5})?$/i
const HostName = Schema.transform(stringWhere((s) => hostPattern.test(s)), Schema.String, {
  strict: true,
  decode: (s) => s.toLowerCase(),
  encode: (s) => s
})
export const hostNames = codec(ListText, Schema.Array(HostName), "comma-separated host names like sidecar.internal or sidecar.internal:9190")

/** Secrets become `Redacted` as soon as they are read; header values cannot hold spaces or controls. */
export const secret = codec(
  Schema.String,
  Schema.transform(stringWhere((s) => /^[\x21-\x7e]+$/.test(s)), Schema.RedactedFromSelf(Schema.String), {
    strict: true,
    decode: (s) => Redacted.make(s),
    encode: (r) => Redacted.value(r)
  }),
  "printable ASCII without spaces"
)

function urlWith(s: string, protocols: ReadonlyArray<string>): URL | undefined {
  try {
    const url = new URL(s)
    return protocols.includes(url.protocol) ? url : undefined
  } catch {
    return undefined
  }
}

function isOrigin(s: string): boolean {
  const url = urlWith(s, ["http:", "https:"])
  return url !== undefined && url.username === "" && url.password === "" && url.pathname === "/" && url.search === "" &&
    url.hash === "" && !/^https?:\/\/[^/]+\/./i.test(s) && !s.endsWith("?") && !s.endsWith("#")
}

/** A member's schema whose every failure reads `expected <expected>, got <value>`. */
const member = <A, I>(schema: Schema.Schema<A, I>, expected: string) =>
  schema.annotations({ message: (issue) => ({ message: `expected ${expected}, got ${show(issue.actual)}`, override: true }) })

/** What X-Client-Id accepts, and so what a `clients:` key may be (besides `default`). */
export const clientIdPattern = /^[A-Za-z0-9._:@/+-]{1,64}$/

const ClientLimitsEntry = Schema.Struct({
  rpm: Schema.optionalWith(member(numberWhere((n) => Number.isFinite(n) && n > 0), "a number > 0"), { exact: true }),
  max_queued: Schema.optionalWith(member(numberWhere((n) => Number.isSafeInteger(n) && n >= 0), "an integer >= 0"), { exact: true }),
  max_priority: Schema.optionalWith(member(Schema.Literal(...priorities), `one of ${priorities.join(", ")}`), { exact: true })
}).annotations({
  parseOptions: { onExcessProperty: "error" },
  message: (issue) => ({ message: `expected a mapping of rpm, max_queued, max_priority, got ${show(issue.actual)}`, override: false })
})

const ClientLimitsRecord = Schema.Record({
  key: stringWhere((s) => clientIdPattern.test(s)),
  value: ClientLimitsEntry
}).annotations({
  parseOptions: { onExcessProperty: "error" },
  message: (issue) => ({ message: `expected a mapping of client ids to {rpm, max_queued, max_priority}, got ${show(issue.actual)}`, override: false })
})

/** Per-client limits: `{<client id>: {rpm, max_queued, max_priority}}`; `default` for everyone else. */
export const clientLimits: Codec<typeof ClientLimitsRecord.Type, unknown> = {
  text: Schema.parseJson().annotations({ message: () => ({ message: "expected JSON text: a mapping of client ids to {rpm, max_queued, max_priority}", override: true }) }),
  value: Schema.compose(Schema.Unknown, ClientLimitsRecord, { strict: false }),
  expected: "a mapping of client ids to {rpm, max_queued, max_priority}",
  structured: true
}

/** `alice.rpm: expected a number > 0, got -1`: the first problem of a structured value, by its path. */
export const structuredProblem = (error: ParseResult.ParseError, expected: string, skip = 0): string => {
  const first = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  if (first === undefined) return `expected ${expected}`
  const issue = { ...first, path: first.path.slice(skip) }
  const path = issue.path.length === 0 ? "" : `${issue.path.join(".")}: `
  if (issue._tag !== "Unexpected") return `${path}${issue.message}`
  return issue.path.length <= 1
    ? `${path}not a client id (1-64 letters, digits or ._:@/+-)`
    : `${path}not a known member (rpm, max_queued, max_priority)`
}
