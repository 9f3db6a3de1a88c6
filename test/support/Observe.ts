import { request } from "undici"

/** Polls `condition` until it holds and returns the millis that took; fails the test after `ms` of real time. */
export const until = async (condition: () => boolean | Promise<boolean>, ms = 5000): Promise<number> => {
  const started = performance.now()
  while (!(await condition())) {
    if (performance.now() - started > ms) throw new Error(`condition not met within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return performance.now() - started
}

/** "done" if `promise` settles within `ms`, else "timeout". */
export const settlesWithin = <A>(promise: Promise<A>, ms: number): Promise<"done" | "timeout"> =>
  Promise.race([promise.then(() => "done" as const), new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), ms))])

export const scrape = async (metricsUrl: string): Promise<string> => (await request(metricsUrl)).body.text()

/** The value of one Prometheus series (`name{labels}`) in a scrape, if present. */
export const metricValue = (text: string, series: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

/** Waits until the sidecar reports `depth` requests of `priority` waiting (fresh on every scrape). */
export const untilQueued = (metricsUrl: string, priority: string, depth: number) =>
  until(async () => metricValue(await scrape(metricsUrl), `sidecar_queue_depth{priority="${priority}"}`) === depth)
