// The snapshotters of this node by name, as containerd's snapshots service picks one per
// request (services/snapshots/service.go), and what a namespace still holds in any of them.
import { invalidArgument } from '@berth/errdefs';
import type { Snapshotter } from './local.js';

export class Snapshotters {
  private readonly byName: Map<string, Snapshotter>;

  constructor(list: Snapshotter[]) {
    this.byName = new Map(list.map((s) => [s.name, s]));
  }

  get(name: string | undefined): Snapshotter {
    if (!name) throw invalidArgument('snapshotter argument missing');
    const s = this.byName.get(name);
    if (!s) throw invalidArgument(`snapshotter not loaded: ${name}`);
    return s;
  }

  all(): Snapshotter[] {
    return [...this.byName.values()];
  }

  /** containerd's words for what keeps a namespace from being deleted */
  async kinds(ns: string): Promise<string[]> {
    const out: string[] = [];
    for (const s of [...this.byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (await s.holds(ns)) out.push(`snapshots on "${s.name}" snapshotter`);
    }
    return out;
  }
}
