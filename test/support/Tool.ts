// Running external checkers (nix-instantiate, systemd-analyze, promtool) from tests.
//
// These tools also talk about the machine they run on, not only about the file they check: nix
// installed from Debian's nix-bin without its build users prints
//   warning: the group 'nixbld' specified in 'build-users-group' does not exist
// on every call. A test that wants an empty stderr fails on a fresh machine for that alone, so
// tests assert the exit status and the absence of lines about the checked thing (or errors), never
// an empty stderr.
import { spawnSync } from "node:child_process"

export const hasCommand = (name: string): boolean =>
  spawnSync("sh", ["-c", 'command -v "$1"', "sh", name], { stdio: "ignore" }).status === 0

export interface ToolRun {
  /** Exit status; null when the tool could not be started or was killed. */
  readonly status: number | null
  /** The tool's product (an AST, a report): never searched for complaints. */
  readonly stdout: string
  readonly stderr: string
  /** stderr lines that are errors or that speak of the checked thing; chatter about the machine is left out. */
  readonly complaints: ReadonlyArray<string>
}

export const isError = (line: string): boolean => /^\s*error\b/i.test(line)

/**
 * Runs `command args` to completion. `about` tells which stderr lines speak of the thing checked
 * (a file name, a unit name, a metric name); those and every `error…` line are complaints.
 */
export function runTool(
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly about: (line: string) => boolean; readonly input?: string }
): ToolRun {
  const run = spawnSync(command, args, { encoding: "utf8", timeout: 60_000, ...(options.input === undefined ? {} : { input: options.input }) })
  const stdout = run.stdout ?? ""
  const stderr = `${run.stderr ?? ""}${run.error ? `error: ${run.error.message}\n` : ""}`
  const complaints = stderr
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line !== "" && (isError(line) || options.about(line)))
  return { status: run.status, stdout, stderr, complaints }
}
