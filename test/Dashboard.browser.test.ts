import { existsSync, mkdirSync } from "node:fs"
import { chromium, type Browser } from "playwright-core"
import { request } from "undici"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, MockUpstream } from "./support/MockUpstream.js"
import { root, spawnSidecar, type SidecarProcess } from "./support/Process.js"

const executablePath = "/usr/bin/chromium"
let upstream: MockUpstream
let sidecar: SidecarProcess
let browser: Browser

beforeAll(async () => {
  upstream = await MockUpstream.start()
  upstream.handler = (_req, res) => void setTimeout(() => json(res, 200, { ok: true }), 20)
  sidecar = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_RATE_RPM: "600", SIDECAR_BUCKET_CAPACITY: "5" })
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
  })
}, 30_000)
afterAll(async () => {
  await browser?.close()
  if (sidecar?.child.exitCode === null) sidecar.child.kill("SIGKILL")
  await upstream?.close()
})

describe.skipIf(!existsSync(executablePath))("dashboard in a real browser", () => {
  it("renders offline, follows live traffic, applies a new RPM, and masks within 6 s when the sidecar stops", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    const foreign: Array<string> = []
    const errors: Array<string> = []
    page.on("pageerror", (e) => errors.push(e.message))
    // Offline: anything not served by the sidecar itself is blocked and remembered.
    await page.route("**/*", (route) => {
      const url = route.request().url()
      if (url.startsWith(sidecar.url) || url.startsWith("data:")) return route.continue()
      foreign.push(url)
      return route.abort()
    })
    await page.goto(`${sidecar.url}/`)
    expect(page.url()).toBe(`${sidecar.url}/api/dashboard`)
    await page.waitForFunction(() => document.querySelector("#total-requests")?.textContent?.trim() === "0")
    expect(await page.inputValue("#cfg-rate_rpm")).toBe("600")

    // Traffic: totals and the low queue bar move.
    const burst = Array.from({ length: 30 }, (_, i) =>
      request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", "x-priority": i % 2 === 0 ? "low" : "high" }, body: "{\"model\":\"nvidia/x\"}" }).then((r) => r.body.text())
    )
    await page.waitForFunction(() => Number(document.querySelector("#queue-count-low")?.textContent) > 0, undefined, { timeout: 5000 })
    expect(await page.textContent("#queue-title")).toMatch(/Queue \(\d+ \/ 500\)/)
    expect(await page.$eval("#queue-bar-low", (el) => getComputedStyle(el).transitionDuration)).toBe("0.3s")
    await Promise.all(burst)
    await page.waitForFunction(() => Number(document.querySelector("#total-requests")?.textContent?.replace(/\D/g, "")) >= 30, undefined, { timeout: 5000 })
    // The control law, its state, the learned quota and per-model in-flight limits (/status control).
    expect(await page.textContent("#retreat-state")).toBe("open")
    expect(await page.textContent("#control-label")).toBe("Control · learning")
    expect(await page.textContent("#ctl-quota")).toBe("not learned")
    expect(await page.textContent("#ctl-limits")).toBe("none learned")
    upstream.handler = (req, res) =>
      req.json?.model === "nvidia/capped"
        ? json(res, 429, { error: "Worker local total request limit reached (3/3)" })
        : void setTimeout(() => json(res, 200, { ok: true }), 20)
    await request(`${sidecar.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{\"model\":\"nvidia/capped\"}" }).then((r) => r.body.text())
    // One call in flight when its workers were full: the limit is 1 (never above our own count less the refused call).
    await page.waitForFunction(() => /capped: 1$/.test(document.querySelector("#ctl-limits")?.textContent ?? ""), undefined, { timeout: 5000 })

    // The config form applies a new rate (loopback write, no token configured).
    await page.fill("#cfg-rate_rpm", "90")
    await page.click("#cfg-apply")
    await page.waitForFunction(() => /applied/i.test(document.querySelector("#cfg-status")?.textContent ?? ""), undefined, { timeout: 5000 })
    const config = (await (await request(`${sidecar.url}/api/admin/config`)).body.json()) as { rate_rpm: number }
    expect(config.rate_rpm).toBe(90)

    mkdirSync(`${root}/test-output`, { recursive: true })
    await page.screenshot({ path: `${root}/test-output/dashboard.png` })

    // Stop the sidecar: the mask shows within 6 s.
    expect(await page.isVisible("#conn-mask")).toBe(false)
    sidecar.child.kill("SIGTERM")
    await sidecar.exited
    const stoppedAt = performance.now()
    await page.waitForSelector("#conn-mask", { state: "visible", timeout: 6000 })
    expect(performance.now() - stoppedAt).toBeLessThan(6000)
    await page.screenshot({ path: `${root}/test-output/dashboard-disconnected.png` })

    expect(foreign).toEqual([])
    expect(errors).toEqual([])
  }, 40_000)

  it("asks once for the admin token when one is set, and keeps it for the tab only", async () => {
    const token = "dash-admin-token"
    const secured = await spawnSidecar({ SIDECAR_UPSTREAM: upstream.url, SIDECAR_ADMIN_TOKEN: token, SIDECAR_RATE_RPM: "77" })
    const context = await browser.newContext()
    try {
      const page = await context.newPage()
      const prompts: Array<string> = []
      page.on("dialog", (dialog) => {
        prompts.push(dialog.message())
        void dialog.accept(token)
      })
      await page.goto(`${secured.url}/api/dashboard`)
      await page.waitForFunction(() => (document.querySelector("#cfg-rate_rpm") as HTMLInputElement | null)?.value === "77", undefined, { timeout: 5000 })
      expect(prompts).toHaveLength(1)
      expect(await page.evaluate(() => sessionStorage.getItem("nvidia-sidecar-admin-token"))).toBe(token)
      expect(await page.evaluate(() => localStorage.length)).toBe(0)
      // A reload in the same tab needs no second prompt.
      await page.reload()
      await page.waitForFunction(() => (document.querySelector("#cfg-rate_rpm") as HTMLInputElement | null)?.value === "77", undefined, { timeout: 5000 })
      expect(prompts).toHaveLength(1)
    } finally {
      await context.close()
      secured.child.kill("SIGTERM")
      await secured.exited
    }
  }, 30_000)
})
