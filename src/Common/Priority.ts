export const priorities = ["urgent", "high", "normal", "low"] as const

export type Priority = (typeof priorities)[number]

/** Lower rank is served first. */
export const rank: Readonly<Record<Priority, number>> = { urgent: 0, high: 1, normal: 2, low: 3 }

/** `X-Priority`, case-insensitive; unknown or missing means normal. */
export const fromHeader = (value: string | ReadonlyArray<string> | undefined): Priority => {
  const raw = (typeof value === "string" ? value : value?.[0] ?? "").trim().toLowerCase()
  return (priorities as ReadonlyArray<string>).includes(raw) ? (raw as Priority) : "normal"
}
