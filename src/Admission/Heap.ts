/**
 * A binary min-heap whose items remember their own slot (`items[i][key] === i`, -1 = not in it),
 * so removing or re-keying any item is O(log n) without a search.
 */
export class Heap<T extends Record<K, number>, K extends string> {
  private readonly items: Array<T> = []

  constructor(private readonly key: K, private readonly less: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length
  }

  peek(): T | undefined {
    return this.items[0]
  }

  has(item: T): boolean {
    return item[this.key] >= 0
  }

  push(item: T): void {
    this.place(item, this.items.length)
    this.siftUp(this.items.length - 1)
  }

  /** False when `item` was not in the heap. */
  remove(item: T): boolean {
    const index = item[this.key]
    if (index < 0) return false
    const last = this.items.pop()!
    this.setSlot(item, -1)
    if (last !== item) {
      this.place(last, index)
      this.update(last)
    }
    return true
  }

  /** Restores the order after `item`'s key changed. */
  update(item: T): void {
    const index = item[this.key]
    if (index < 0) return
    this.siftDown(index)
    this.siftUp(item[this.key])
  }

  toArray(): Array<T> {
    return [...this.items]
  }

  private setSlot(item: T, index: number): void {
    ;(item as Record<K, number>)[this.key] = index
  }

  private place(item: T, index: number): void {
    this.items[index] = item
    this.setSlot(item, index)
  }

  private siftUp(index: number): void {
    const item = this.items[index]!
    while (index > 0) {
      const parentIndex = (index - 1) >> 1
      const parent = this.items[parentIndex]!
      if (!this.less(item, parent)) break
      this.place(parent, index)
      index = parentIndex
    }
    this.place(item, index)
  }

  private siftDown(index: number): void {
    const items = this.items
    const item = items[index]!
    for (;;) {
      let child = 2 * index + 1
      if (child >= items.length) break
      if (child + 1 < items.length && this.less(items[child + 1]!, items[child]!)) child++
      if (!this.less(items[child]!, item)) break
      this.place(items[child]!, index)
      index = child
    }
    this.place(item, index)
  }
}
