import { Effect, Either, Logger } from "effect"
import { describe, expect, it } from "vitest"
import { ClientGone, Defect, QueueFull } from "../src/Common/Errors.js"
import { toErrorResponse } from "../src/Common/ErrorResponse.js"
import * as Bridge from "../src/DataPath/Bridge.js"

const withLines = async () => {
  const lines: Array<{ level: string; message: unknown }> = []
  const capture = Logger.make(({ logLevel, message }) => void lines.push({ level: logLevel.label, message }))
  const bridge = await Effect.runPromise(Bridge.make.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture))))
  return { bridge, lines }
}

describe("Bridge", () => {
  it("settles an effect that never suspends synchronously, without a Promise", async () => {
    const { bridge } = await withLines()
    const result = bridge.run(Effect.succeed(42))
    expect(result).not.toBeInstanceOf(Promise)
    expect(result).toEqual(Either.right(42))
  })

  it("returns an expected failure as Left, untouched", async () => {
    const { bridge, lines } = await withLines()
    expect(bridge.run(Effect.fail(new QueueFull({ capacity: 3 })))).toEqual(Either.left(new QueueFull({ capacity: 3 })))
    expect(lines).toEqual([])
  })

  it("turns a defect into Left(Defect), a 500 with the OpenAI error body, and an ERROR line with the cause", async () => {
    const { bridge, lines } = await withLines()
    const result = await bridge.run(Effect.zipRight(Effect.sleep("1 millis"), Effect.die(new Error("boom in admission"))))
    expect(result).toEqual(Either.left(new Defect()))
    const response = toErrorResponse(new Defect())
    expect(response.status).toBe(500)
    expect(JSON.parse(response.body)).toMatchObject({ error: { type: "server_error", code: "internal_error" } })
    await Effect.runPromise(Effect.yieldNow())
    expect(lines).toHaveLength(1)
    expect(lines[0]?.level).toBe("ERROR")
    expect(JSON.stringify(lines[0]?.message)).toContain("boom in admission")
  })

  it("interrupts a waiting effect when the signal aborts and reports the client gone", async () => {
    const { bridge, lines } = await withLines()
    const controller = new AbortController()
    let finalized = false
    const pending = bridge.run(Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => void (finalized = true)))), controller.signal)
    expect(pending).toBeInstanceOf(Promise)
    controller.abort()
    expect(await pending).toEqual(Either.left(new ClientGone()))
    expect(finalized).toBe(true)
    expect(lines).toEqual([])
  })

  it("does not start an effect for a client that already left", async () => {
    const { bridge } = await withLines()
    const controller = new AbortController()
    controller.abort()
    let ran = false
    expect(bridge.run(Effect.sync(() => void (ran = true)), controller.signal)).toEqual(Either.left(new ClientGone()))
    expect(ran).toBe(false)
  })

  it("waits for a pending result with no fiber: the settling code's effect gives the answer", async () => {
    const { bridge } = await withLines()
    let settle: ((rest: Effect.Effect<number, QueueFull>) => void) | undefined
    let left = 0
    const waited = bridge.wait({ onSettled: (settled) => void (settle = settled), leave: Effect.sync(() => void left++) }, new AbortController().signal)
    settle?.(Effect.succeed(7))
    expect(await waited).toEqual(Either.right(7))
    expect(left).toBe(0)
  })

  it("runs leave and reports the client gone when the signal aborts before the pending result settles", async () => {
    const { bridge } = await withLines()
    const controller = new AbortController()
    let settle: ((rest: Effect.Effect<number>) => void) | undefined
    let left = 0
    const waited = bridge.wait({ onSettled: (settled) => void (settle = settled), leave: Effect.sync(() => void left++) }, controller.signal)
    controller.abort()
    expect(await waited).toEqual(Either.left(new ClientGone()))
    expect(left).toBe(1)
    expect(settle).toBeDefined()
  })
})
