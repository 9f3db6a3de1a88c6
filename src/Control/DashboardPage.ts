import { existsSync, readFileSync } from "node:fs"

/** The dashboard HTML, read once, from `<repo>/static`: one level up from the `dist/` bundle, two from `src/Control/`. */
export const loadDashboardPage = (): string => {
  const candidates = ["../static/dashboard.html", "../../static/dashboard.html"].map((p) => new URL(p, import.meta.url))
  return readFileSync(candidates.find((url) => existsSync(url)) ?? candidates[0]!, "utf8")
}
