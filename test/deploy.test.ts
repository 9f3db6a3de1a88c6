// Deployment artefacts: systemd unit, flake, Dockerfile, .env.example, and the runtime layout
// they all ship (dist/ + bin/ + package.json, started with node).
import { describe, it, expect } from "vitest";
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { renderEnvExample } from "../src/Config/ConfigDocs.js";
import { externalVariables, settingNames } from "../src/Config/Settings.js";
import { hasCommand, runTool } from "./support/Tool.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const read = (path: string): string => readFileSync(join(root, path), "utf8");

// Every setting the sidecar reads (src/Settings.ts), plus the two OpenTelemetry variables the deployment documents.
const SETTINGS = [...settingNames, ...externalVariables.map((v) => v.name)];
const DRAIN_TIMEOUT_DEFAULT_S = 25;

const UNIT = "deploy/nvidia-sidecar.service";
// The Node.js LTS line every deploy path ships (Dockerfile, flake.nix) and CI's second test run uses.
const DEPLOYED_NODE_MAJOR = 24;
// What every deploy path installs: the bundle, the CLI entry point, the dashboard page, package.json.
const RUNTIME_PARTS = ["bin", "dist", "static", "package.json"] as const;

interface PackageJson {
  readonly bin: Record<string, string>;
  readonly scripts: Record<string, string>;
  readonly engines: { readonly node: string };
}
const pkg = JSON.parse(read("package.json")) as PackageJson;
const entryPoint = pkg.bin["nvidia-sidecar"] ?? "";

/** key -> values of a systemd unit section (a key may repeat). */
function unitSection(text: string, section: string): Map<string, Array<string>> {
  const out = new Map<string, Array<string>>();
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = header[1] ?? "";
      continue;
    }
    const eq = line.indexOf("=");
    if (current !== section || eq < 0) continue;
    const key = line.slice(0, eq);
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function dockerInstructions(text: string): Array<{ op: string; args: string }> {
  const joined = text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .map((line) => {
      const space = line.search(/\s/);
      return space < 0
        ? { op: line.toUpperCase(), args: "" }
        : { op: line.slice(0, space).toUpperCase(), args: line.slice(space).trim() };
    });
}

// The checks below run real tools; these fake ones pin down what counts as a complaint.
describe("external checkers (test/support/Tool.ts)", () => {
  const fake = (script: string) => runTool("sh", ["-c", script], { about: (line) => line.includes("flake.nix") });

  it("leaves out a tool's talk about the machine, keeps errors and lines about the checked file", () => {
    const chatter = fake(`echo "warning: the group 'nixbld' specified in 'build-users-group' does not exist" >&2; echo parsed`);
    expect(chatter.status).toBe(0);
    expect(chatter.complaints).toEqual([]);
    expect(chatter.stdout).toBe("parsed\n");
    expect(fake(`echo "error: syntax error, unexpected ';'" >&2; exit 1`)).toMatchObject({
      status: 1,
      complaints: ["error: syntax error, unexpected ';'"],
    });
    expect(fake(`echo "warning: something odd at /src/flake.nix:6:3" >&2`).complaints).toEqual(["warning: something odd at /src/flake.nix:6:3"]);
  });

  it("reports a tool that cannot start as an error", () => {
    const run = runTool(join(tmpdir(), "no-such-checker"), [], { about: () => false });
    expect(run.status).toBeNull();
    expect(run.complaints).toEqual([expect.stringMatching(/^error: .*ENOENT/)]);
  });
});

describe("systemd unit", () => {
  const unit = read(UNIT);
  const service = unitSection(unit, "Service");

  it.skipIf(!hasCommand("systemd-analyze"))("passes systemd-analyze verify with no complaint about it", () => {
    // verify checks that ExecStart's binary exists: point it at this node when /usr/bin/node is absent.
    const dir = mkdtempSync(join(tmpdir(), "sidecar-unit-"));
    try {
      const path = join(dir, "nvidia-sidecar.service");
      writeFileSync(path, existsSync("/usr/bin/node") ? unit : unit.replaceAll("/usr/bin/node", process.execPath));
      const run = runTool("systemd-analyze", ["verify", path], { about: (line) => line.includes("nvidia-sidecar") });
      expect(run.complaints).toEqual([]);
      expect(run.status, run.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!hasCommand("systemd-analyze"))("keeps the systemd-analyze security exposure at or below 1.5", () => {
    const run = runTool("systemd-analyze", ["security", "--offline=yes", join(root, UNIT)], { about: () => false });
    const score = /Overall exposure level for nvidia-sidecar\.service: ([\d.]+)/.exec(run.stdout);
    expect(score, run.stdout + run.stderr).not.toBeNull();
    expect(Number(score?.[1])).toBeLessThanOrEqual(1.5);
  });

  it("runs the npm entry point with node, as a hardened transient user", () => {
    expect(service.get("ExecStart")).toEqual([`/usr/bin/node /opt/nvidia-sidecar/${entryPoint}`]);
    expect(service.get("EnvironmentFile")).toEqual(["-/etc/nvidia-sidecar/env"]);
    expect(service.get("DynamicUser")).toEqual(["yes"]);
    expect(service.get("CapabilityBoundingSet")).toEqual([""]);
    // V8's JIT needs W+X pages: MemoryDenyWriteExecute=yes would kill node.
    expect(service.get("MemoryDenyWriteExecute")).toEqual(["no"]);
  });

  it("gives the SIGTERM drain time to finish before systemd kills the process", () => {
    expect(service.get("KillSignal")).toEqual(["SIGTERM"]);
    expect(Number(service.get("TimeoutStopSec")?.[0])).toBeGreaterThan(DRAIN_TIMEOUT_DEFAULT_S);
  });

  it("is mirrored by the NixOS module in flake.nix", () => {
    const flake = read("flake.nix");
    // WorkingDirectory and Environment have NixOS counterparts of other shapes.
    const mirrored = [...service.keys()].filter((key) => key !== "WorkingDirectory" && key !== "Environment");
    expect(mirrored.filter((key) => !new RegExp(`\\b${key} =`).test(flake))).toEqual([]);
    expect(flake).toMatch(/TimeoutStopSec = 35;/);
  });
});

describe("flake", () => {
  const flake = read("flake.nix");

  // nix from Debian's nix-bin warns about its missing nixbld group on every call: that is about
  // the machine, not the flake, and must not fail the check.
  it.skipIf(!hasCommand("nix-instantiate"))("parses", () => {
    const run = runTool("nix-instantiate", ["--parse", join(root, "flake.nix")], { about: (line) => line.includes("flake.nix") });
    expect(run.complaints).toEqual([]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain("nixosModules");
  });

  it("gives importNpmLock a resolved URL and an integrity hash for every locked package", () => {
    // The project .npmrc keeps `resolved` in the lockfile; importNpmLock fetches by it.
    type Entry = { version?: string; resolved?: string; integrity?: string; link?: boolean };
    const lock = JSON.parse(read("package-lock.json")) as { packages: Record<string, Entry> };
    const unfetchable = Object.entries(lock.packages)
      .filter(([path, e]) => path !== "" && e.link !== true)
      .filter(([, e]) => !(e.resolved?.startsWith("https://") && e.integrity !== undefined))
      .map(([path]) => path);
    expect(unfetchable).toEqual([]);
  });

  it("builds and runs the same entry point as npm start", () => {
    expect(entryPoint).toBe("bin/nvidia-sidecar.mjs");
    expect(pkg.scripts["start"]).toBe(`node ${entryPoint}`);
    expect(pkg.scripts["build"]).toBeDefined();
    expect(flake).toContain(`npmBuildScript = "build";`);
    expect(flake).toMatch(/npmDeps = importNpmLock \{/);
    expect(flake).toContain("npmConfigHook = importNpmLock.npmConfigHook;");
    expect(flake).toContain(`nodejs = pkgs.nodejs_${String(DEPLOYED_NODE_MAJOR)};`);
    expect(flake).toContain(`makeWrapper \${nodejs}/bin/node $out/bin/nvidia-sidecar`);
    expect(flake).toContain(`--add-flags $out/lib/nvidia-sidecar/${entryPoint}`);
    expect(flake).toContain("cp -r bin dist static $out/lib/nvidia-sidecar/");
    expect(flake).toContain("cp ${./package.json} $out/lib/nvidia-sidecar/package.json");
    for (const system of ["x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"]) {
      expect(flake).toContain(`"${system}"`);
    }
  });

  it("maps the module's redisUrl option to SIDECAR_REDIS_URL, and refuses it set twice", () => {
    expect(flake).toMatch(/redisUrl = lib\.mkOption \{\s*type = lib\.types\.nullOr lib\.types\.str;\s*default = null;/);
    expect(flake).toContain("lib.optionalAttrs (cfg.redisUrl != null) { SIDECAR_REDIS_URL = cfg.redisUrl; }");
    expect(flake).toContain("cfg.redisUrl == null || !(cfg.settings ? SIDECAR_REDIS_URL)");
  });

  it("pins nixpkgs in flake.lock to a full revision with its NAR hash", () => {
    type Node = { locked?: Record<string, unknown>; original?: Record<string, unknown>; inputs?: Record<string, string> };
    const lock = JSON.parse(read("flake.lock")) as { nodes: Record<string, Node>; root: string; version: number };
    expect(lock.version).toBe(7);
    const nixpkgs = lock.nodes[lock.nodes[lock.root]?.inputs?.["nixpkgs"] ?? ""];
    expect(nixpkgs?.locked).toMatchObject({ type: "github", owner: "NixOS", repo: "nixpkgs" });
    expect(String(nixpkgs?.locked?.["rev"])).toMatch(/^[0-9a-f]{40}$/);
    expect(String(nixpkgs?.locked?.["narHash"])).toMatch(/^sha256-[A-Za-z0-9+/]{43}=$/);
    expect(flake).toContain(`github:NixOS/nixpkgs/${String(nixpkgs?.original?.["ref"])}"`);
  });
});

describe("Node.js line", () => {
  const engines = pkg.engines.node;

  it("states a range in engines that admits the Node.js running these tests", () => {
    expect(satisfiesCaretRange(engines, process.versions.node), `node ${process.versions.node} vs engines ${engines}`).toBe(true);
  });

  it("admits the deployed LTS line and Node 20 from undici's floor up, and no odd (never-LTS) line", () => {
    expect(satisfiesCaretRange(engines, `${String(DEPLOYED_NODE_MAJOR)}.0.0`)).toBe(true);
    expect(satisfiesCaretRange(engines, "20.18.1")).toBe(true);
    // undici 7 (bundled into dist/) needs Node >= 20.18.1.
    expect(satisfiesCaretRange(engines, "20.18.0")).toBe(false);
    for (const odd of ["19.9.0", "21.7.3", "23.11.1", "25.9.0"]) expect(satisfiesCaretRange(engines, odd), odd).toBe(false);
  });

  it("ships the same LTS line from the Dockerfile, the flake and CI's second run", () => {
    const image = /^ARG NODE_IMAGE=node:(\d+)-/m.exec(read("Dockerfile"))?.[1];
    expect(Number(image)).toBe(DEPLOYED_NODE_MAJOR);
    // Every nodejs_N in the flake (package, wrapper, dev shell) is that line.
    const flakeLines = [...read("flake.nix").matchAll(/\bnodejs_(\d+)\b/g)].map((m) => Number(m[1]));
    expect(flakeLines.length).toBeGreaterThanOrEqual(2);
    expect(new Set(flakeLines)).toEqual(new Set([DEPLOYED_NODE_MAJOR]));
    expect(Number(/^lts_major=(\d+)$/m.exec(read(".ci/run"))?.[1])).toBe(DEPLOYED_NODE_MAJOR);
  });

  it("builds the bundle for the oldest line engines admits", () => {
    const lowest = Math.min(...engines.split("||").map((clause) => Number(/\^(\d+)/.exec(clause)?.[1])));
    expect(read("scripts/build.mjs")).toContain(`target: "node${String(lowest)}"`);
  });
});

describe(".ci/run", () => {
  // The shared-limit tests and `bench --suite redis` start their own redis-server on a free port.
  it("installs Debian's redis-server when missing, without starting the system service", () => {
    const ci = read(".ci/run");
    expect(ci).toContain(`command -v redis-server >/dev/null || need="$need redis-server"`);
    expect(ci).toMatch(/printf '#!\/bin\/sh\\nexit 101\\n' >"\$policy"/);
  });
});

describe("Dockerfile", () => {
  const steps = dockerInstructions(read("Dockerfile"));
  const lastFrom = steps.map((s) => s.op).lastIndexOf("FROM");
  const runtime = steps.slice(lastFrom);
  const args = (op: string) => runtime.filter((s) => s.op === op).map((s) => s.args);

  it("is multi-stage", () => {
    expect(steps.filter((s) => s.op === "FROM").length).toBeGreaterThanOrEqual(2);
  });

  it("runs the final stage as a non-root user", () => {
    const user = args("USER").at(-1) ?? "";
    expect(user).not.toBe("");
    expect(user.split(":")[0]).not.toMatch(/^(root|0)$/);
  });

  it("copies exactly the runtime parts into the final stage", () => {
    const copied = args("COPY").map((a) => a.split(/\s+/).at(-1)?.replace(/^\.\//, ""));
    expect(copied.sort()).toEqual([...RUNTIME_PARTS].sort());
  });

  it("ships no dev dependencies in the final stage", () => {
    const installs = args("RUN").filter((a) => /\bnpm (ci|install|i)\b/.test(a));
    expect(installs.filter((a) => !a.includes("--omit=dev"))).toEqual([]);
    // node_modules copied from the build stage would carry devDependencies (esbuild, vitest...).
    expect(args("COPY").filter((a) => a.includes("node_modules"))).toEqual([]);
  });

  it("listens on all interfaces on the proxy and metrics ports", () => {
    expect(args("ENV")).toContain("SIDECAR_HOST=0.0.0.0");
    expect(args("EXPOSE").join(" ").split(/\s+/)).toEqual(expect.arrayContaining(["9190", "9191"]));
  });

  it("checks health with node against /health and stops with SIGTERM", () => {
    const check = args("HEALTHCHECK").join(" ");
    expect(check).toMatch(/CMD \["node"/);
    expect(check).toContain("http://127.0.0.1:");
    expect(check).toContain("/health");
    expect(args("STOPSIGNAL")).toEqual(["SIGTERM"]);
    expect(args("CMD").at(-1)).toBe(`["node", "${entryPoint}"]`);
  });

  it("keeps node_modules and secrets out of the build context", () => {
    const ignored = read(".dockerignore").split("\n").map((line) => line.trim());
    expect(ignored).toContain("node_modules");
    expect(ignored).toContain(".env");
  });
});

describe(".env.example", () => {
  it("lists every setting the sidecar reads", () => {
    const text = read(".env.example");
    expect(SETTINGS.filter((name) => !new RegExp(`^#?${name}=`, "m").test(text))).toEqual([]);
    expect(text).toMatch(new RegExp(`^#?SIDECAR_DRAIN_TIMEOUT=${String(DRAIN_TIMEOUT_DEFAULT_S)}$`, "m"));
    expect(SETTINGS).toContain("OTEL_EXPORTER_OTLP_ENDPOINT");
  });

  it("is the file generated from src/Settings.ts (node scripts/config-docs.mjs rewrites it)", () => {
    expect(read(".env.example")).toBe(renderEnvExample());
  });
});

// Docker, systemd and nix all ship only RUNTIME_PARTS; nix runs them from any working directory.
describe.skipIf(!existsSync(join(root, "dist/main.mjs")))("runtime layout (needs npm run build)", () => {
  it("serves /health, the dashboard and /metrics from the runtime parts alone, exits 0 on SIGTERM", async () => {
    const app = mkdtempSync(join(tmpdir(), "sidecar-app-"));
    const elsewhere = mkdtempSync(join(tmpdir(), "sidecar-cwd-"));
    try {
      for (const part of RUNTIME_PARTS) cpSync(join(root, part), join(app, part), { recursive: true });
      const [port, metricsPort] = [String(await freePort()), String(await freePort())];
      const env: NodeJS.ProcessEnv = Object.fromEntries(
        Object.entries(process.env).filter(([key]) => !key.startsWith("SIDECAR_") && !key.startsWith("OTEL_")),
      );
      const child = spawn(process.execPath, [join(app, entryPoint)], {
        cwd: elsewhere,
        env: {
          ...env,
          NODE_ENV: "production",
          SIDECAR_HOST: "127.0.0.1",
          SIDECAR_PORT: port,
          SIDECAR_METRICS_PORT: metricsPort,
          SIDECAR_API_KEY: "test-key",
          SIDECAR_UPSTREAM: "http://127.0.0.1:9/v1",
        },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = new Promise<number | null>((resolve) => {
        child.on("exit", resolve);
      });
      try {
        expect(await waitForStatus(`http://127.0.0.1:${port}/health`, 10_000), stderr).toBe(200);
        expect((await fetch(`http://127.0.0.1:${port}/api/dashboard`)).status, stderr).toBe(200);
        expect((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status, stderr).toBe(200);
      } finally {
        child.kill("SIGTERM");
      }
      expect(await exited, stderr).toBe(0);
    } finally {
      rmSync(app, { recursive: true, force: true });
      rmSync(elsewhere, { recursive: true, force: true });
    }
  }, 45_000);
});

/** Whether version x.y.z satisfies a range of `^x[.y[.z]]` clauses joined by `||` (the only form engines uses). */
function satisfiesCaretRange(range: string, version: string): boolean {
  const [major = NaN, minor = NaN, patch = NaN] = version.split(".").map(Number);
  return range.split("||").some((raw) => {
    const clause = /^\^(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(raw.trim());
    if (!clause) throw new Error(`engines clause not of the form ^x.y.z: "${raw.trim()}"`);
    const [want, wantMinor, wantPatch] = [Number(clause[1]), Number(clause[2] ?? 0), Number(clause[3] ?? 0)];
    return major === want && (minor > wantMinor || (minor === wantMinor && patch >= wantPatch));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (typeof address === "object" && address) resolve(address.port);
        else reject(new Error("no port"));
      });
    });
  });
}

async function waitForStatus(url: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return (await fetch(url)).status;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
