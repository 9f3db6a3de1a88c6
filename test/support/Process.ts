import { spawn, type ChildProcess } from "node:child_process"
import { fileURLToPath } from "node:url"

export const root = fileURLToPath(new URL("../..", import.meta.url))

export interface SidecarProcess {
  readonly child: ChildProcess
  readonly port: number
  readonly metricsPort: number
  readonly url: string
  /** Everything written to stdout and stderr so far. */
  output: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>
}

/** Runs the built CLI (`node bin/nvidia-sidecar.mjs`) as a user would; ports 0, read back from the log. */
export const spawnSidecar = async (env: Record<string, string>, args: Array<string> = []): Promise<SidecarProcess> => {
  const child = spawn(process.execPath, ["bin/nvidia-sidecar.mjs", ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", SIDECAR_PORT: "0", SIDECAR_METRICS_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()))
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, at: performance.now() }))
  )
  const ports = await new Promise<{ proxy: number; metrics: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar did not start:\n${out}`)), 10_000)
    const check = () => {
      const proxy = /"server":"proxy","address":"http:\/\/[^:]+:(\d+)"/.exec(out)?.[1]
      const metrics = /"server":"metrics","address":"http:\/\/[^:]+:(\d+)\/metrics"/.exec(out)?.[1]
      if (proxy !== undefined && metrics !== undefined) {
        clearTimeout(timer)
        resolve({ proxy: Number(proxy), metrics: Number(metrics) })
      }
    }
    child.stdout?.on("data", check)
    void exited.then(() => {
      clearTimeout(timer)
      reject(new Error(`sidecar exited early:\n${out}`))
    })
  })
  return { child, port: ports.proxy, metricsPort: ports.metrics, url: `http://127.0.0.1:${ports.proxy}`, output: () => out, exited }
}

/** Runs the CLI to completion (for --help, --version, bad config). */
export const runCli = (args: Array<string>, env: Record<string, string> = {}, cwd = root) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ["bin/nvidia-sidecar.mjs", ...args], { cwd, env: { PATH: process.env.PATH ?? "", ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })
