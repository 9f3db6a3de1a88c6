// The real sidecar on port 0 against a mock upstream: two clients told apart by X-Client-Id.
import { request } from "undici"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { untilQueued } from "./support/Observe.js"
import { startSidecar, type RunningSidecar } from "./support/Sidecar.js"

let upstream: MockUpstream
let sidecar: RunningSidecar | undefined

beforeEach(async () => {
  upstream = await MockUpstream.start()
  upstream.handler = (_req, res) => json(res, 200, { ok: true })
})
afterEach(async () => {
  await sidecar?.close()
  sidecar = undefined
  await upstream.close()
})

const chat = (url: string, client: string, headers: Record<string, string> = {}) =>
  request(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-client-id": client, ...headers },
    body: JSON.stringify({ model: "nvidia/x" })
  }).then(async (res) => ({ status: res.statusCode, headers: res.headers, body: await res.body.text(), at: performance.now() }))

describe("fairness through the real sidecar", () => {
  it("serves a light client ahead of a flood, caps its priority, and refuses the flood beyond its queue share", async () => {
    // 120 rpm, burst 1: a token every 500 ms. The flood may queue 5; the light client claims urgent but is capped.
    sidecar = await startSidecar({
      upstream: upstream.url,
      rateRpm: 120,
      bucketCapacity: 1,
      clients: { flood: { max_queued: 5 }, light: { max_priority: "normal" } }
    })
    const flood = Array.from({ length: 8 }, () => chat(sidecar!.url, "flood"))
    await untilQueued(sidecar.metricsUrl, "normal", 5)
    const light = await chat(sidecar.url, "light", { "x-priority": "urgent" })
    const answers = await Promise.all(flood)

    expect(light.status).toBe(200)
    expect(light.headers["x-sidecar-priority"]).toBe("normal")
    const refused = answers.filter((a) => a.status === 429)
    expect(refused).toHaveLength(2)
    for (const answer of refused) {
      expect(Number(answer.headers["retry-after"])).toBeGreaterThanOrEqual(1)
      expect(answer.body).toContain("maximum number of queued requests")
    }
    // One flood request took the bucket's token at once; the light one was next, before 5 queued flood requests.
    const servedAfterLight = answers.filter((a) => a.status === 200 && a.at > light.at)
    expect(servedAfterLight.length).toBeGreaterThanOrEqual(4)

    const status = await (await request(`${sidecar.url}/status`)).body.json() as { clients: { tracked: number; busiest: Array<{ id: string; admitted_per_minute: number }> } }
    expect(status.clients.tracked).toBe(2)
    expect(Object.fromEntries(status.clients.busiest.map((c) => [c.id, c.admitted_per_minute]))).toEqual({ flood: 6, light: 1 })
  }, 15_000)
})
