// Namespaces and their labels in the store: one key per namespace, `ns/<name>` → labels.
import { key, prefix, unescapePart, type Store, type Txn } from '@berth/store';

export type Labels = Record<string, string>;

export const nsKey = (name: string) => key('ns', name);

export class NamespaceStore {
  constructor(readonly db: Store) {}

  labels(name: string, tx: Pick<Txn, 'get'> = this.db): Promise<Labels | undefined> {
    return tx.get<Labels>(nsKey(name));
  }

  async list(): Promise<{ name: string; labels: Labels }[]> {
    const out = [];
    const p = prefix('ns');
    for await (const [k, labels] of this.db.entries<Labels>(p)) out.push({ name: unescapePart(k.slice(p.length)), labels });
    return out;
  }
}
