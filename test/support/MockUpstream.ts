import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"

export interface Received {
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly body: string
  readonly json: Record<string, unknown> | undefined
  /** performance.now() when the request arrived. */
  readonly at: number
  /** Resolves when the client side of this request closed before the response finished. */
  readonly aborted: Promise<void>
  abortedAt: number | undefined
}

export type MockHandler = (req: Received, res: ServerResponse) => void | Promise<void>

/** An upstream the test owns: records every request and answers with the current handler. */
export class MockUpstream {
  readonly received: Array<Received> = []
  handler: MockHandler = (_req, res) => json(res, 200, { id: "chatcmpl-mock", object: "chat.completion", choices: [] })
  private constructor(private readonly server: Server, readonly port: number) {}

  static async start(): Promise<MockUpstream> {
    const holder: { mock?: MockUpstream } = {}
    const server = createServer((req, res) => void holder.mock?.handle(req, res))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    holder.mock = new MockUpstream(server, (server.address() as AddressInfo).port)
    return holder.mock
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/v1`
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = Buffer.concat(chunks).toString("utf8")
    let parsed: Record<string, unknown> | undefined
    try {
      parsed = body === "" ? undefined : (JSON.parse(body) as Record<string, unknown>)
    } catch {
      parsed = undefined
    }
    let onAbort: () => void = () => {}
    const aborted = new Promise<void>((resolve) => (onAbort = resolve))
    const received: Received = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body, json: parsed, at: performance.now(), aborted, abortedAt: undefined }
    res.on("close", () => {
      if (!res.writableFinished) {
        received.abortedAt = performance.now()
        onAbort()
      }
    })
    this.received.push(received)
    await this.handler(received, res)
  }
}

export const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(status, { "content-type": "application/json", ...headers })
  res.end(JSON.stringify(body))
}

/** Streams `count` SSE chunks `everyMs` apart, then `[DONE]`; stops if the client leaves. */
export const sse = (res: ServerResponse, count: number, everyMs: number, chunk: (i: number) => unknown = (i) => ({ i })) =>
  new Promise<void>((resolve) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    res.flushHeaders()
    let i = 0
    const timer = setInterval(() => {
      if (res.destroyed) {
        clearInterval(timer)
        resolve()
        return
      }
      res.write(`data: ${JSON.stringify(chunk(i))}\n\n`)
      if (++i === count) {
        clearInterval(timer)
        res.end("data: [DONE]\n\n")
        resolve()
      }
    }, everyMs)
  })
