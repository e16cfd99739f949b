// Namespaces and their labels in the store: one key per namespace, `ns/<name>` → labels.
import type { Store } from '@berth/store';

export type Labels = Record<string, string>;

export class NamespaceStore {
  constructor(private readonly db: Store) {}

  labels(name: string): Promise<Labels | undefined> {
    return this.db.get<Labels>(`ns/${name}`);
  }

  put(name: string, labels: Labels): Promise<void> {
    return this.db.put(`ns/${name}`, labels);
  }

  remove(name: string): Promise<void> {
    return this.db.del(`ns/${name}`);
  }

  async list(): Promise<{ name: string; labels: Labels }[]> {
    const out = [];
    for await (const [k, labels] of this.db.entries<Labels>('ns/')) out.push({ name: k.slice(3), labels });
    return out;
  }
}
