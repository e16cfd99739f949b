// Leases as containerd 1.6 keeps them (metadata/leases.go): per namespace, an id, labels, a
// creation time, and the resources the lease holds. The collector that honours them comes with
// garbage collection; until then a lease records, and deleting it drops the record.
import { alreadyExists, BerthError, Code, invalidArgument, notFound } from '@berth/errdefs';
import { parseAll } from '@berth/filters';
import { randomBytes } from 'node:crypto';
import { digestProblem } from '@berth/identifiers';
import type { Store } from '@berth/store';

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

const leaseKey = (ns: string, id: string) => `${ns}/lease/${id}`;
const resKey = (ns: string, id: string, r?: Resource) => `${ns}/res/${id}/${r ? `${r.type}\u0000${r.id}` : ''}`;

export class Leases {
  constructor(private readonly db: Store, private readonly now: () => { seconds: number; nanos: number }) {}

  /** Lease ids are not identifiers (clients make them from a time and random base64); none given: one is made. */
  async create(ns: string, id: string, labels: Record<string, string>): Promise<Lease> {
    if (!id) id = `${Date.now()}${String(process.hrtime.bigint() % 1000n)}-${randomBytes(3).toString('base64url')}`;
    if (await this.db.get(leaseKey(ns, id))) throw alreadyExists(`lease "${id}"`);
    const lease: Lease = { id, created_at: this.now(), labels };
    await this.db.put(leaseKey(ns, id), lease);
    return lease;
  }

  async delete(ns: string, id: string): Promise<void> {
    if (!(await this.db.get(leaseKey(ns, id)))) throw notFound(`lease "${id}"`);
    const ops: { type: 'del'; key: string }[] = [{ type: 'del', key: leaseKey(ns, id) }];
    for await (const [k] of this.db.entries(resKey(ns, id))) ops.push({ type: 'del', key: k });
    await this.db.batch(ops);
  }

  async list(ns: string, filters: string[]): Promise<Lease[]> {
    const f = parseAll(filters);
    const out: Lease[] = [];
    for await (const [, l] of this.db.entries<Lease>(`${ns}/lease/`)) {
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

  private async require(ns: string, id: string): Promise<void> {
    if (!(await this.exists(ns, id))) throw notFound(`lease "${id}"`);
  }

  async addResource(ns: string, id: string, r: Resource): Promise<void> {
    await this.require(ns, id);
    checkResource(r);
    await this.db.put(resKey(ns, id, r), r);
  }

  async deleteResource(ns: string, id: string, r: Resource): Promise<void> {
    await this.require(ns, id);
    checkResource(r);
    await this.db.del(resKey(ns, id, r));
  }

  async resources(ns: string, id: string): Promise<Resource[]> {
    await this.require(ns, id);
    const out: Resource[] = [];
    for await (const [, r] of this.db.entries<Resource>(resKey(ns, id))) out.push(r);
    return out;
  }
}
