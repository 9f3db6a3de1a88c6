/** One priority level: FIFO by arrival; a retried request goes back to its place by arrival order. */
export class LevelQueue<T extends { readonly seq: number }> {
  private readonly items: Array<T> = []

  push(item: T): void {
    this.items.push(item)
  }

  requeue(item: T): void {
    let i = 0
    while (i < this.items.length && this.items[i]!.seq < item.seq) i++
    this.items.splice(i, 0, item)
  }

  remove(item: T): void {
    const i = this.items.indexOf(item)
    if (i >= 0) this.items.splice(i, 1)
  }

  first(ok: (item: T) => boolean): T | undefined {
    return this.items.find(ok)
  }
}
