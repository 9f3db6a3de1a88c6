import { readFileSync } from "node:fs"

/** The dashboard HTML, read once. Resolves to `<repo>/static` from `src/` and from the `dist/` bundle alike. */
export const loadDashboardPage = (): string => readFileSync(new URL("../static/dashboard.html", import.meta.url), "utf8")
