#!/usr/bin/env node
import { existsSync } from "node:fs"

const bundle = new URL("../dist/main.mjs", import.meta.url)
if (!existsSync(bundle)) {
  console.error("nvidia-sidecar: dist/main.mjs is missing; run `npm run build` (npm start does it for you).")
  process.exit(1)
}
await import(bundle.href)
