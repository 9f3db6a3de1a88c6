import { describe, expect, it } from "vitest"
import { replaceModel } from "../src/DataPath/ModelRewrite.js"

const rewrite = (text: string, model = "deepseek-ai/r1") => replaceModel(Buffer.from(text), model)?.toString("utf8")

describe("replaceModel", () => {
  it("replaces only the model value and keeps every other byte", () => {
    const body = '{"temperature": 1e400, "seed": 12345678901234567890, "x": -0, "model" : "nvidia/deepseek-ai/r1", "n": 1.50}'
    expect(rewrite(body)).toBe('{"temperature": 1e400, "seed": 12345678901234567890, "x": -0, "model" : "deepseek-ai/r1", "n": 1.50}')
  })

  it("ignores model keys in nested objects and strings, and takes the last top-level one", () => {
    const body = '{"messages":[{"model":"nested","content":"\\"model\\": \\"no\\""}],"model":"nvidia/a/b","meta":{"model":"x"}}'
    expect(rewrite(body)).toBe('{"messages":[{"model":"nested","content":"\\"model\\": \\"no\\""}],"model":"deepseek-ai/r1","meta":{"model":"x"}}')
    expect(rewrite('{"model":"nvidia/a/b","model":"nvidia/c/d"}')).toBe('{"model":"nvidia/a/b","model":"deepseek-ai/r1"}')
  })

  it("copes with a deeply nested body without recursion", () => {
    const deep = `{"model":"nvidia/a/b","x":${"[".repeat(10_000)}${"]".repeat(10_000)}}`
    expect(rewrite(deep)?.startsWith('{"model":"deepseek-ai/r1","x":[[[')).toBe(true)
  })

  it("gives up (undefined) when the model is not a plain string member", () => {
    expect(rewrite('{"model":42}')).toBeUndefined()
    expect(rewrite('{"\\u006dodel":"nvidia/a/b"}')).toBeUndefined()
    expect(rewrite('{"model":"unterminated')).toBeUndefined()
  })

  it("escapes the new value as JSON", () => {
    expect(rewrite('{"model":"nvidia/a/b"}', 'q"uote')).toBe('{"model":"q\\"uote"}')
  })
})
