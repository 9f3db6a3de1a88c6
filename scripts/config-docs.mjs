// Rewrites .env.example and the README's configuration table from src/Config/Settings.ts.
import { build } from "esbuild"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { pathToFileURL } from "node:url"

const dir = mkdtempSync(join(tmpdir(), "config-docs-"))
try {
  const outfile = join(dir, "ConfigDocs.mjs")
  await build({ entryPoints: ["src/Config/ConfigDocs.ts"], bundle: true, platform: "node", format: "esm", outfile, logLevel: "warning" })
  const docs = await import(pathToFileURL(outfile).href)
  writeFileSync(".env.example", docs.renderEnvExample())
  const readme = readFileSync("README.md", "utf8")
  const table = /^\| env \|[^\n]*\n(?:\|[^\n]*\n)*/m
  if (!table.test(readme)) throw new Error("README.md: no table starting with `| env |`")
  writeFileSync("README.md", readme.replace(table, `${docs.renderConfigTable()}\n`))
} finally {
  rmSync(dir, { recursive: true, force: true })
}
