// Namespaces and their labels in the store: one key per namespace, `ns/<name>` → labels.
// List is on the path of nearly every client (ctr, nerdctl and the CRI ask it first), and a
// store scan cost more than the rest of the call, so the list is kept in memory: this process
// writes every record (through put/del here), and the copy follows each committed write.
import { key, prefix, unescapePart, type Store, type Txn } from '@berth/store';

export type Labels = Record<string, string>;
type Entry = { name: string; labels: Labels };

export const nsKey = (name: string) => key('ns', name);

export class NamespaceStore {
  /** by store key, so the list comes out in the store's order */
  private cache?: Map<string, Entry>;
  private sorted?: Entry[];
  private writes = 0;

  constructor(readonly db: Store) {}

  labels(name: string, tx: Pick<Txn, 'get'> = this.db): Promise<Labels | undefined> {
    return tx.get<Labels>(nsKey(name));
  }

  put(tx: Txn, name: string, labels: Labels): void {
    tx.put(nsKey(name), labels);
    const copy = { name, labels: { ...labels } };
    tx.afterCommit(() => this.changed(nsKey(name), copy));
  }

  del(tx: Txn, name: string): void {
    tx.del(nsKey(name));
    tx.afterCommit(() => this.changed(nsKey(name), undefined));
  }

  private changed(k: string, e: Entry | undefined): void {
    this.writes++;
    this.sorted = undefined;
    if (!this.cache) return;
    if (e) this.cache.set(k, e);
    else this.cache.delete(k);
  }

  async list(): Promise<Entry[]> {
    if (!this.cache) {
      const before = this.writes;
      const scanned = await this.scan();
      // a write committed during the scan may be missing from it: that answer is as good as a
      // scan's ever was, but it is not kept
      if (this.writes !== before) return scanned.map(([, e]) => e);
      this.cache = new Map(scanned);
    }
    this.sorted ??= [...this.cache].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
    return this.sorted.map((e) => ({ name: e.name, labels: { ...e.labels } }));
  }

  private async scan(): Promise<[string, Entry][]> {
    const out: [string, Entry][] = [];
    const p = prefix('ns');
    for await (const [k, labels] of this.db.entries<Labels>(p)) out.push([k, { name: unescapePart(k.slice(p.length)), labels }]);
    return out;
  }
}
