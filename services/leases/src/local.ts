// Leases as containerd 1.6 keeps them (metadata/leases.go): per namespace, an id, labels, a
// creation time, and the resources the lease holds: all of them, whichever service made the
// resource (content and snapshots record theirs here, see @berth/bus leases.ts). The collector
// that honours them comes with garbage collection.
import { alreadyExists, BerthError, Code, invalidArgument, notFound } from '@berth/errdefs';
import { parseAll } from '@berth/filters';
import { randomBytes } from 'node:crypto';
import { digestProblem } from '@berth/identifiers';
import { key, prefix, unescapePart, type BatchOp, type Store } from '@berth/store';
import type { GcRecords } from '@berth/bus';

export interface Lease {
  id: string;
  created_at: { seconds: number; nanos: number };
  labels: Record<string, string>;
}

export interface Resource {
  id: string;
  type: string;
}


/** containerd's check of a resource type: content (by digest), ingests, snapshots/<snapshotter>. */
export function checkResource(r: Resource): void {
  const keys = r.type.split('/');
  switch (keys[0]) {
    case 'content':
    case 'ingests':
      if (keys.length !== 1) throw invalidArgument(`invalid resource type ${r.type}`);
      if (keys[0] === 'content') {
        const bad = digestProblem(r.id);
        if (bad) throw invalidArgument(`invalid content resource id ${r.id}: ${bad}`);
      }
      return;
    case 'snapshots':
      if (keys.length !== 2) throw invalidArgument(`invalid snapshot resource type ${r.type}`);
      return;
    default:
      throw new BerthError(Code.Unimplemented, `resource type ${r.type} not supported yet: not implemented`);
  }
}

// A lease and its resources: `lease/<ns>/<id>` → Lease, `res/<ns>/<id>/<type>/<resource id>` →
// Resource. Every part is escaped, so lease `a` never sees the records of lease `a/b`.
const leaseKey = (ns: string, id: string) => key('lease', ns, id);
const resPrefix = (ns: string, id: string) => prefix('res', ns, id);
const resKey = (ns: string, id: string, r: Resource) => key('res', ns, id, r.type, r.id);

/**
 * Every change to a lease or its resources holds the lease's record lock, so a resource is
 * never added to a lease that is being deleted (and then outlives it), and two creates of one
 * id have one winner.
 */
export class Leases {
  constructor(private readonly db: Store, private readonly now: () => { seconds: number; nanos: number }) {}

  /** Lease ids are not identifiers (clients make them from a time and random base64); none given: one is made. */
  async create(ns: string, id: string, labels: Record<string, string>): Promise<Lease> {
    if (!id) id = `${Date.now()}${String(process.hrtime.bigint() % 1000n)}-${randomBytes(3).toString('base64url')}`;
    return this.db.transact([leaseKey(ns, id)], async (tx) => {
      if (await tx.get(leaseKey(ns, id))) throw alreadyExists(`lease "${id}"`);
      const lease: Lease = { id, created_at: this.now(), labels };
      tx.put(leaseKey(ns, id), lease);
      return lease;
    });
  }

  async delete(ns: string, id: string): Promise<void> {
    await this.db.transact([leaseKey(ns, id)], async (tx) => {
      if (!(await tx.get(leaseKey(ns, id)))) throw notFound(`lease "${id}"`);
      tx.del(leaseKey(ns, id));
      for await (const [k] of this.db.entries(resPrefix(ns, id))) tx.del(k);
    });
  }

  /** The namespace was deleted: its leases go with it, as in containerd. */
  async purge(ns: string): Promise<void> {
    const ops: BatchOp[] = [];
    for (const p of [prefix('lease', ns), prefix('res', ns)]) for await (const [k] of this.db.entries(p)) ops.push({ type: 'del', key: k });
    if (ops.length) await this.db.batch(ops);
  }

  async list(ns: string, filters: string[]): Promise<Lease[]> {
    const f = parseAll(filters);
    const out: Lease[] = [];
    for await (const [, l] of this.db.entries<Lease>(prefix('lease', ns))) {
      const match = f.match({
        field: ([head, ...rest]) => (head === 'id' && !rest.length ? l.id : head === 'labels' && rest.length ? l.labels[rest.join('.')] : undefined),
      });
      if (match) out.push(l);
    }
    return out;
  }

  async exists(ns: string, id: string): Promise<boolean> {
    return (await this.db.get(leaseKey(ns, id))) !== undefined;
  }

  async addResource(ns: string, id: string, r: Resource): Promise<void> {
    checkResource(r);
    await this.db.transact([leaseKey(ns, id)], async (tx) => {
      if (!(await tx.get(leaseKey(ns, id)))) throw notFound(`lease "${id}"`);
      tx.put(resKey(ns, id, r), { id: r.id, type: r.type });
    });
  }

  async deleteResource(ns: string, id: string, r: Resource): Promise<void> {
    checkResource(r);
    await this.db.transact([leaseKey(ns, id)], async (tx) => {
      if (!(await tx.get(leaseKey(ns, id)))) throw notFound(`lease "${id}"`);
      tx.del(resKey(ns, id, r));
    });
  }

  /** Every namespace's leases with their labels and resources, as the collector reads them. */
  async gcRecords(): Promise<GcRecords> {
    const leases = new Map<string, NonNullable<GcRecords['leases']>[number]>();
    const id = (ns: string, lease: string) => `${ns}\u0000${lease}`;
    const parts = (k: string, from: string) => k.slice(from.length).split('/').map(unescapePart);
    for await (const [k, l] of this.db.entries<Lease>(prefix('lease'))) {
      const [ns] = parts(k, prefix('lease'));
      leases.set(id(ns!, l.id), { ns: ns!, id: l.id, labels: l.labels ?? {}, resources: [] });
    }
    for await (const [k, r] of this.db.entries<Resource>(prefix('res'))) {
      const [ns, lease] = parts(k, prefix('res'));
      leases.get(id(ns!, lease!))?.resources.push({ type: r.type, id: r.id });
    }
    return { leases: [...leases.values()] };
  }

  /** Removes leases the collector found expired (gone already: nothing to do); stops once `live` turns false. */
  async collect(list: { ns: string; id: string }[], live: () => boolean): Promise<number> {
    let n = 0;
    for (const l of list) {
      if (!live()) break;
      try {
        await this.delete(l.ns, l.id);
        n++;
      } catch (e) {
        if (!(e instanceof BerthError && e.code === Code.NotFound)) throw e;
      }
    }
    return n;
  }

  async resources(ns: string, id: string): Promise<Resource[]> {
    if (!(await this.exists(ns, id))) throw notFound(`lease "${id}"`);
    const out: Resource[] = [];
    for await (const [, r] of this.db.entries<Resource>(resPrefix(ns, id))) out.push(r);
    return out;
  }
}
