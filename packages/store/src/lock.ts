// Serialises work on one record: containerd got this from bolt's single writer; we get it per
// key, so writes to different records still run side by side. In-process only: a store is
// opened by exactly one process (RocksDB's LOCK file sees to that).

export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier holder of any of `keys` is done. Keys are taken in sorted order, so two callers never wait on each other. */
  async with<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const before: Promise<void>[] = [];
    for (const k of sorted) {
      const prev = this.tails.get(k);
      if (prev) before.push(prev);
      this.tails.set(k, mine);
    }
    try {
      await Promise.all(before);
      return await fn();
    } finally {
      release();
      for (const k of sorted) if (this.tails.get(k) === mine) this.tails.delete(k);
    }
  }

  /** whether anyone holds or waits for `key` (for tests) */
  held(key: string): boolean {
    return this.tails.has(key);
  }
}
