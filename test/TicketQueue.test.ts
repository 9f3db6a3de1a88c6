import { describe, expect, it } from "vitest"
import { priorities, rank } from "../src/Common/Priority.js"
import { makeTicket, type Ticket } from "../src/Admission/Ticket.js"
import { TicketQueue } from "../src/Admission/TicketQueue.js"

// A deterministic PRNG, so a failure replays.
const random = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)

const ticket = (seq: number, p: number, deadline: number): Ticket =>
  makeTicket({ seq, priority: priorities[p]!, model: undefined, enqueuedAt: 0, deadline, span: undefined })

const byService = (a: Ticket, b: Ticket) => rank[a.priority] - rank[b.priority] || a.seq - b.seq

describe("TicketQueue", () => {
  it("agrees with a sorted-array model over 5,000 random adds, removals and takes", () => {
    const next = random(7)
    const queue = new TicketQueue()
    let model: Array<Ticket> = []
    let seq = 0
    for (let step = 0; step < 5000; step++) {
      const roll = next()
      if (roll < 0.5 || model.length === 0) {
        // Mostly new requests; sometimes a retry that reuses an old seq.
        const t = ticket(next() < 0.1 && seq > 10 ? Math.floor(next() * seq) : ++seq, Math.floor(next() * 4), Math.floor(next() * 1000))
        if (model.some((m) => m.seq === t.seq)) continue
        queue.add(t)
        model.push(t)
      } else if (roll < 0.8) {
        const victim = model[Math.floor(next() * model.length)]!
        expect(queue.remove(victim)).toBe(true)
        expect(queue.remove(victim)).toBe(false)
        model = model.filter((m) => m !== victim)
      } else {
        const best = queue.best()!
        expect(best).toBe([...model].sort(byService)[0])
        queue.remove(best)
        model = model.filter((m) => m !== best)
      }
      expect(queue.size).toBe(model.length)
      const sorted = [...model].sort(byService)
      expect(queue.best()).toBe(sorted[0])
      expect(queue.worst()).toBe(sorted.at(-1))
      const earliest = [...model].sort((a, b) => a.deadline - b.deadline || a.seq - b.seq)[0]
      expect(queue.earliestDeadline()).toBe(earliest)
      for (const p of priorities) expect(queue.countOf(p)).toBe(model.filter((m) => m.priority === p).length)
    }
  })

  it("serves a retry ahead of newer requests of its level and behind older ones", () => {
    const queue = new TicketQueue()
    for (const seq of [2, 5, 9]) queue.add(ticket(seq, 2, 100))
    queue.add(ticket(4, 2, 100))
    const order: Array<number> = []
    for (let t = queue.best(); t !== undefined; t = queue.best()) {
      order.push(t.seq)
      queue.remove(t)
    }
    expect(order).toEqual([2, 4, 5, 9])
  })

  it("drains every ticket for shutdown and is empty afterwards", () => {
    const queue = new TicketQueue()
    for (let seq = 1; seq <= 50; seq++) queue.add(ticket(seq, seq % 4, seq))
    expect(queue.drain()).toHaveLength(50)
    expect(queue.size).toBe(0)
    expect(queue.best()).toBeUndefined()
    expect(queue.byPriority()).toEqual({ urgent: 0, high: 0, normal: 0, low: 0 })
  })
})
