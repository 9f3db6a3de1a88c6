import type { Effect, Tracer } from "effect"
import type { AdmissionError } from "../Common/Errors.js"
import type { Priority } from "../Common/Priority.js"
import type { ClientState } from "./ClientTable.js"

/**
 * One waiting request. Plain mutable data: the queue links it into its client's FIFO and its deadline
 * heap, and whoever settles it first (dispatcher, sweeper, eviction, shutdown, the waiter leaving) decides its outcome.
 */
export interface Ticket {
  readonly seq: number
  readonly priority: Priority
  /** Whose request it is: its place in the round of its level, its share of the client's limits. */
  readonly client: ClientState
  readonly model: string | undefined
  readonly enqueuedAt: number
  /** Absolute time after which the request is answered 429 (queue timeout). */
  readonly deadline: number
  /** The waiter's span, so the dispatcher's token wait shows up in its trace. */
  readonly span: Tracer.AnySpan | undefined
  /** Set by the waiter when it suspends; called once with the outcome. */
  resume: ((outcome: TicketOutcome) => void) | undefined
  /** Decided once, by whoever settles the ticket first. */
  outcome: TicketOutcome | undefined
  // Links: its client's FIFO at its level, and its slot in the deadline heap (-1 = not in it).
  prev: Ticket | undefined
  next: Ticket | undefined
  heapIndex: number
}

/** Admitted: a slot is held for it and a token was spent; otherwise why not. */
export type TicketOutcome =
  | { readonly _tag: "Admitted"; readonly release: Effect.Effect<void> }
  | { readonly _tag: "Refused"; readonly error: AdmissionError }
  | { readonly _tag: "Left" }

// Every field written out, in one order: a spread would give tickets a slower, dictionary-like shape.
export const makeTicket = (fields: Pick<Ticket, "seq" | "priority" | "client" | "model" | "enqueuedAt" | "deadline" | "span">): Ticket => ({
  seq: fields.seq,
  priority: fields.priority,
  client: fields.client,
  model: fields.model,
  enqueuedAt: fields.enqueuedAt,
  deadline: fields.deadline,
  span: fields.span,
  resume: undefined,
  outcome: undefined,
  prev: undefined,
  next: undefined,
  heapIndex: -1
})
