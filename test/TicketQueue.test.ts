import { beforeEach, describe, expect, it } from "vitest"
import { priorities, rank } from "../src/Common/Priority.js"
import { newClient, type ClientState } from "../src/Admission/ClientTable.js"
import { makeTicket, type Ticket } from "../src/Admission/Ticket.js"
import { TicketQueue } from "../src/Admission/TicketQueue.js"

// A deterministic PRNG, so a failure replays.
const random = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)

// Lanes live on the client: each test gets a fresh one.
let anyone = newClient("anyone", {}, 0)
beforeEach(() => {
  anyone = newClient("anyone", {}, 0)
})
const ticket = (seq: number, p: number, deadline: number, client: ClientState = anyone): Ticket =>
  makeTicket({ seq, priority: priorities[p]!, client, model: undefined, enqueuedAt: 0, deadline, span: undefined })

const byService = (a: Ticket, b: Ticket) => rank[a.priority] - rank[b.priority] || a.seq - b.seq

describe("TicketQueue", () => {
  it("agrees (fairness off, several clients) with a sorted-array model", () => {
    const next = random(11)
    const queue = new TicketQueue(false)
    const clients = ["a", "b", "c", "d"].map((id) => newClient(id, {}, 0))
    let model: Array<Ticket> = []
    let seq = 0
    for (let step = 0; step < 3000; step++) {
      const roll = next()
      if (roll < 0.5 || model.length === 0) {
        const t = ticket(next() < 0.1 && seq > 10 ? Math.floor(next() * seq) : ++seq, Math.floor(next() * 4), Math.floor(next() * 1000), clients[Math.floor(next() * 4)])
        if (model.some((m) => m.seq === t.seq)) continue
        queue.add(t)
        model.push(t)
      } else if (roll < 0.75) {
        const victim = model[Math.floor(next() * model.length)]!
        expect(queue.remove(victim)).toBe(true)
        model = model.filter((m) => m !== victim)
      } else {
        const best = queue.best()!
        expect(best).toBe([...model].sort(byService)[0])
        queue.remove(best, true)
        model = model.filter((m) => m !== best)
      }
      const sorted = [...model].sort(byService)
      expect(queue.best()).toBe(sorted[0])
      // The newest of the lowest level present, whoever's it is.
      const lowest = sorted.at(-1)
      expect(queue.worst()).toBe(lowest === undefined ? undefined : sorted.filter((m) => m.priority === lowest.priority).sort((x, y) => y.seq - x.seq)[0])
      for (const c of clients) expect(c.queued).toBe(model.filter((m) => m.client === c).length)
    }
  })

  it("agrees (fair) with a virtual-time model over random adds, leaves, turns, parking and retries", () => {
    const next = random(3)
    const queue = new TicketQueue(true)
    const clients = ["a", "b", "c", "d", "e"].map((id) => newClient(id, {}, 0))
    // The model: per level a virtual time; per client and level its next turn (start) and the turn
    // after its last one (finish); the eligible client with the smallest (start, oldest seq) goes next.
    let model: Array<Ticket> = []
    const now = [0, 0, 0, 0]
    const turns = new Map<string, { start: number; finish: number }>()
    const turn = (c: ClientState, level: number) => {
      const key = `${c.id}/${level}`
      if (!turns.has(key)) turns.set(key, { start: 0, finish: 0 })
      return turns.get(key)!
    }
    const parked = new Set<ClientState>()
    const lane = (c: ClientState, level: number) => model.filter((m) => m.client === c && rank[m.priority] === level).sort((x, y) => x.seq - y.seq)
    const join = (c: ClientState, level: number) => {
      const t = turn(c, level)
      t.start = Math.max(now[level]!, t.finish)
    }
    const modelBest = () => {
      for (let level = 0; level < 4; level++) {
        const ready = clients.filter((c) => !parked.has(c) && lane(c, level).length > 0)
          .map((c) => ({ start: turn(c, level).start, head: lane(c, level)[0]! }))
          .sort((x, y) => x.start - y.start || x.head.seq - y.head.seq)
        if (ready.length > 0) return ready[0]!.head
      }
      return undefined
    }
    let seq = 0
    for (let step = 0; step < 5000; step++) {
      const roll = next()
      if (roll < 0.45 || model.length === 0) {
        const client = clients[Math.floor(next() * clients.length)]!
        const t = ticket(next() < 0.1 && seq > 10 ? Math.floor(next() * seq) : ++seq, Math.floor(next() * 4), Math.floor(next() * 1000), client)
        if (model.some((m) => m.seq === t.seq)) continue
        const level = rank[t.priority]
        const wasEmpty = lane(client, level).length === 0
        queue.add(t)
        model.push(t)
        if (wasEmpty && !parked.has(client)) join(client, level)
      } else if (roll < 0.65) {
        // Leaving: the client went away, or its deadline passed; the turn stays with the client.
        const victim = model[Math.floor(next() * model.length)]!
        expect(queue.remove(victim)).toBe(true)
        expect(queue.remove(victim)).toBe(false)
        model = model.filter((m) => m !== victim)
      } else if (roll < 0.9) {
        const best = queue.best()
        expect(best).toBe(modelBest())
        if (best === undefined) continue
        const level = rank[best.priority]
        queue.remove(best, true)
        model = model.filter((m) => m !== best)
        const t = turn(best.client, level)
        now[level] = Math.max(now[level]!, t.start)
        t.finish = t.start + 1
        t.start = t.finish
      } else {
        const client = clients[Math.floor(next() * clients.length)]!
        if (parked.has(client)) {
          queue.unpark(client)
          parked.delete(client)
          for (let level = 0; level < 4; level++) if (lane(client, level).length > 0) join(client, level)
        } else {
          queue.park(client, 1 + step)
          parked.add(client)
        }
      }
      expect(queue.size).toBe(model.length)
      expect(queue.best()).toBe(modelBest())
      for (const p of priorities) expect(queue.countOf(p)).toBe(model.filter((m) => m.priority === p).length)
      const earliest = [...model].sort((a, b) => a.deadline - b.deadline || a.seq - b.seq)[0]
      expect(queue.earliestDeadline()).toBe(earliest)
      // drop_lowest: the newest of the client with the most at the lowest level, parked or not.
      const lowest = Math.max(-1, ...model.map((m) => rank[m.priority]))
      const lanes = clients.map((c) => lane(c, lowest)).filter((l) => l.length > 0)
      const fullest = lanes.sort((x, y) => y.length - x.length || y.at(-1)!.seq - x.at(-1)!.seq)[0]
      expect(queue.worst()).toBe(fullest?.at(-1))
      expect(queue.nextWake()).toBe([...parked].sort((x, y) => x.parkedUntil - y.parkedUntil)[0])
    }
  })

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
