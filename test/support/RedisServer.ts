import { type ChildProcess, spawn } from "node:child_process"
import { createServer, Socket } from "node:net"

/** A real `redis-server` of the test's own, on a free port (never 6379), without persistence. */
export interface RedisServer {
  readonly port: number
  readonly url: string
  /** SIGKILL: the connection drops at once. */
  readonly stop: () => Promise<void>
  /** SIGSTOP: the socket stays open but nothing answers (a hung Redis). */
  readonly pause: () => void
  readonly resume: () => void
  /** Starts again on the same port, empty. */
  readonly restart: () => Promise<void>
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** One PING over a raw socket: answered +PONG within the deadline, or not. */
const pings = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = new Socket()
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(200, () => done(false))
    socket.once("error", () => done(false))
    socket.once("data", (data) => done(data.toString().startsWith("+PONG")))
    socket.connect(port, "127.0.0.1", () => socket.write("PING\r\n"))
  })

export const startRedis = async (): Promise<RedisServer> => {
  const port = await freePort()
  let child: ChildProcess | undefined
  const launch = async () => {
    const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" })
    child = proc
    const deadline = Date.now() + 5000
    while (Date.now() < deadline) {
      if (await pings(port)) return
      await new Promise((r) => setTimeout(r, 20))
    }
    throw new Error(`redis-server did not answer on port ${port}`)
  }
  const stop = async () => {
    const proc = child
    child = undefined
    if (proc === undefined || proc.exitCode !== null) return
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()))
    proc.kill("SIGCONT")
    proc.kill("SIGKILL")
    await exited
  }
  await launch()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    pause: () => child?.kill("SIGSTOP"),
    resume: () => child?.kill("SIGCONT"),
    restart: async () => {
      await stop()
      await launch()
    }
  }
}
