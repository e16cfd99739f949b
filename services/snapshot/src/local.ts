// One snapshotter as a namespace sees it: containerd's metadata/snapshot.go (names per
// namespace, labels, parents by name, leases) and snapshots/storage (ids, kinds, parent chains,
// usage) in one record per snapshot, over a Driver that owns the directories. No NATS here.
//
// Crash safety, the order of every step:
//  - Prepare/View: reserve an id; make `new-<id>`; rename it to `<id>`; commit the record (with
//    its id index entry and event) in one batch. A crash before the batch leaves a directory
//    without a record: garbage that Cleanup (and start-up) removes. A record is never written
//    before its directory is in place.
//  - Commit: only records change (the directory keeps its id), in one batch.
//  - Remove: delete the record in one batch; then rename `<id>` to `rm-<id>` and delete it. A
//    crash in between leaves a directory without a record: Cleanup's again.
// Cleanup removes every entry of the snapshots folder whose id has no record and is not being
// made right now (`pending`).
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { faultPoint, namespaceRequired, type EventSink, type GcRecords, type LeaseRefs, type NamespaceGuard } from '@berth/bus';
import type { Timestamp } from '@berth/api';
import { alreadyExists, Code, failedPrecondition, invalidArgument, notFound, toBerthError } from '@berth/errdefs';
import { parseAll } from '@berth/filters';
import { validateLabel } from '@berth/identifiers';
import type { MountSpec } from '@berth/native';
import { key, prefix, unescapePart, type Store, type Txn } from '@berth/store';
import { diskUsage, type Usage } from './usage.js';
import type { Driver, Kind } from './drivers.js';

export type Labels = Record<string, string>;

/** What a call carries besides its request: containerd's context. */
export interface Ctx {
  namespace?: string;
  lease?: string;
}

/** containerd's snapshots.v1.Info as the API carries it. */
export interface Info {
  name: string;
  parent: string;
  kind: Kind;
  created_at: Timestamp;
  updated_at: Timestamp;
  labels: Labels;
}

interface SnapRecord {
  /** the directory's name under the driver's folder; kept across Commit */
  id: string;
  /** containerd's backend key (`<ns>/<seq>/<name>`): what its messages name */
  bkey: string;
  kind: Kind;
  parent: string;
  /** parents' ids, nearest first: what the mounts stack */
  chain: string[];
  labels: Labels;
  created: Timestamp;
  updated: Timestamp;
  /** committed: measured at commit, as containerd does */
  usage?: Usage;
}

export interface SnapshotterOptions {
  /** records what is made under a lease (the leases service); without it leases are taken on trust */
  leases?: LeaseRefs;
  /** namespaces exist while snapshots are made in them (see @berth/bus usage.ts) */
  guard?: NamespaceGuard;
}

// containerd's label on a snapshot that names the committed snapshot it is meant to become
const labelSnapshotRef = 'containerd.io/snapshot.ref';

const dropEmpty = (m: Labels | undefined): Labels => Object.fromEntries(Object.entries(m ?? {}).filter(([, v]) => v !== ''));

function validateLabels(labels: Labels): void {
  for (const [k, v] of Object.entries(labels)) {
    try {
      validateLabel(k, v);
    } catch (e) {
      throw toBerthError(e).wrap('info.Labels');
    }
  }
}

const kindName: Record<Kind, string> = { ACTIVE: 'active', VIEW: 'view', COMMITTED: 'committed' };

/** ids reserved in the store at a time (nextId) */
const idBlock = 1024;

export class Snapshotter {
  /** ids whose directory is being made: Cleanup leaves them alone */
  private readonly pending = new Set<string>();
  /** folders of removed snapshots being deleted, by name: Cleanup leaves them alone */
  private readonly removing = new Map<string, Promise<void>>();
  /** the last id handed out, and the end of the block of ids the store holds reserved (nextId) */
  private lastId = 0;
  private reservedTo = 0;
  private reserving?: Promise<void>;

  constructor(
    readonly driver: Driver,
    private readonly db: Store,
    private readonly events: EventSink,
    private readonly now: () => Timestamp,
    private readonly opts: SnapshotterOptions = {},
  ) {}

  /** Makes the folders and removes what a crash left. */
  async open(): Promise<this> {
    await mkdir(this.driver.dir, { recursive: true, mode: 0o700 });
    await this.cleanup();
    return this;
  }

  get name(): string {
    return this.driver.name;
  }

  /** The store key of snapshot `name`'s record: Stat and Mounts answer from it alone. */
  recKey(ns: string, name: string): string {
    return key('snap', this.name, ns, name);
  }

  private childKey(ns: string, parent: string, child: string): string {
    return key('child', this.name, ns, parent, child);
  }

  private idKey(id: string): string {
    return key('sid', this.name, id);
  }

  private inNamespace<T>(ns: string, fn: () => Promise<T>): Promise<T> {
    return this.opts.guard ? this.opts.guard.write(ns, fn) : fn();
  }

  // Two counters, as containerd has: directory ids per snapshotter (its storage's), and the
  // sequence in backend keys per namespace (its metadata's; messages name it). The latter is
  // taken inside the transaction that writes the record.
  /**
   * A new snapshot's id, the name of its folder. Never one used before, even across a crash: the
   * store holds the end of a block of reserved ids (`seq/<snapshotter>`), and ids are handed out
   * from memory up to it; a restart starts after that end, skipping what the block had left.
   * A store write per Prepare was a transaction (lock, write, the collector's count) of every
   * run's CPU, for a number only this process hands out.
   */
  private async nextId(): Promise<string> {
    while (this.lastId >= this.reservedTo) await (this.reserving ??= this.reserve().finally(() => (this.reserving = undefined)));
    return String(++this.lastId);
  }

  private async reserve(): Promise<void> {
    const k = key('seq', this.name);
    const [from, to] = await this.db.transact([k], async (tx) => {
      const from = Math.max((await tx.get<number>(k)) ?? 0, this.reservedTo);
      tx.put(k, from + idBlock);
      return [from, from + idBlock];
    });
    this.lastId = Math.max(this.lastId, from);
    this.reservedTo = to;
  }

  private seqKey(ns: string): string {
    return key('seq', this.name, 'ns', ns);
  }

  private async nextSeq(tx: Txn, ns: string): Promise<number> {
    const n = ((await tx.get<number>(this.seqKey(ns))) ?? 0) + 1;
    tx.put(this.seqKey(ns), n);
    return n;
  }

  private async record(ns: string, name: string): Promise<SnapRecord> {
    const r = await this.db.get<SnapRecord>(this.recKey(ns, name));
    if (!r) throw notFound(`snapshot ${name} does not exist`);
    return r;
  }

  /** Whether the namespace still holds snapshots of this snapshotter. */
  async holds(ns: string): Promise<boolean> {
    return this.db.hasPrefix(prefix('snap', this.name, ns));
  }

  prepare(ctx: Ctx, key: string, parent: string, labels: Labels = {}): Promise<MountSpec[]> {
    return this.create(ctx, 'ACTIVE', key, parent, labels);
  }

  view(ctx: Ctx, key: string, parent: string, labels: Labels = {}): Promise<MountSpec[]> {
    return this.create(ctx, 'VIEW', key, parent, labels);
  }

  /**
   * Berth's own pull, not containerd's API: prepares `key` on `parent` before `parent` exists,
   * while the active snapshot `pending` is still to be committed as it. The new snapshot stacks
   * on `pending`'s directory (kept across its commit), so a layer is applied beside its parent's;
   * its record names `parent` from the start, as a Prepare after that commit would. The caller
   * commits `pending` as `parent` before it commits `key`, and removes `key` if that fails.
   * When `parent` is committed already this is an ordinary Prepare.
   */
  prepareOnPending(ctx: Ctx, key: string, parent: string, pending: string, labels: Labels = {}): Promise<MountSpec[]> {
    if (!parent || !pending) throw invalidArgument('a parent and the active snapshot that becomes it are required');
    return this.create(ctx, 'ACTIVE', key, parent, labels, pending);
  }

  private async create(ctx: Ctx, kind: Kind, name: string, parent: string, given: Labels, pending?: string): Promise<MountSpec[]> {
    const ns = namespaceRequired(ctx);
    validateLabels(given);
    const labels = dropEmpty(given);
    return this.inNamespace(ns, async () => {
      const target = labels[labelSnapshotRef];
      if (target && (await this.db.get(this.recKey(ns, target)))) throw alreadyExists(`target snapshot "${target}"`);
      const check = async (get: <T>(k: string) => Promise<T | undefined>): Promise<SnapRecord | undefined> => {
        if (await get(this.recKey(ns, name))) throw alreadyExists(`snapshot "${name}"`);
        if (!parent) return undefined;
        let p = await get<SnapRecord>(this.recKey(ns, parent));
        if (!p && pending) {
          p = await get<SnapRecord>(this.recKey(ns, pending));
          if (!p) throw notFound(`snapshot ${pending} does not exist`);
          if (p.kind !== 'ACTIVE') throw failedPrecondition(`snapshot "${p.bkey}" is not active`);
          return p;
        }
        if (!p) throw notFound(`parent snapshot ${parent} does not exist`);
        if (p.kind !== 'COMMITTED') throw invalidArgument(`failed to create snapshot: parent "${p.bkey}" is not committed snapshot`);
        return p;
      };
      const p = await check((k) => this.db.get(k));
      // the lease holds the snapshot before its record exists, so it is never unreferenced; the
      // folder is made meanwhile (a collection sweeps by records, and skips pending folders)
      const lease = ctx.lease;
      const leased = lease ? this.opts.leases?.add(ns, lease, { type: `snapshots/${this.name}`, id: name }) : undefined;
      leased?.catch(() => undefined); // awaited below, after the folder's cleanup on failure
      let id: string;
      try {
        id = await this.nextId();
      } catch (e) {
        await leased;
        throw e;
      }
      const chain = p ? [p.id, ...p.chain] : [];
      const final = join(this.driver.dir, id);
      this.pending.add(id);
      let placed = false;
      try {
        const tmp = join(this.driver.dir, `new-${id}`);
        try {
          placed = await this.driver.make(tmp, kind, chain);
          faultPoint('snapshot-prepare-made');
          if (placed) await rename(tmp, final);
        } catch (e) {
          await rm(tmp, { recursive: true, force: true });
          await leased;
          throw e;
        }
        await leased;
        faultPoint('snapshot-prepare-placed');
        const parentKey = [...(parent ? [this.recKey(ns, parent)] : []), ...(pending ? [this.recKey(ns, pending)] : [])];
        const rec = await this.db.transact([this.recKey(ns, name), ...parentKey, this.seqKey(ns)], async (tx) => {
          // again, now that the records are ours (the same parent directory: the pending one may have been committed meanwhile)
          if ((await check((k) => tx.get(k)))?.id !== p?.id) throw notFound(`parent snapshot ${parent} does not exist`);
          const t = this.now();
          const rec: SnapRecord = { id, bkey: `${ns}/${await this.nextSeq(tx, ns)}/${name}`, kind, parent, chain, labels, created: t, updated: t };
          tx.put(this.recKey(ns, name), rec);
          tx.put(this.idKey(id), { ns, name });
          if (parent) tx.put(this.childKey(ns, parent, name), 1);
          // containerd announces Prepare only, not View
          if (kind === 'ACTIVE') this.events.emit(tx, ns, '/snapshot/prepare', { key: name, parent });
          return rec;
        });
        return this.driver.mounts(rec);
      } catch (e) {
        if (placed) await rm(final, { recursive: true, force: true });
        if (lease) await this.opts.leases?.remove(ns, lease, { type: `snapshots/${this.name}`, id: name }).catch(() => undefined);
        throw e;
      } finally {
        this.pending.delete(id);
      }
    });
  }

  async mounts(ctx: Ctx, name: string): Promise<MountSpec[]> {
    const ns = namespaceRequired(ctx);
    const r = await this.record(ns, name);
    if (r.kind === 'COMMITTED') {
      const what = this.name === 'overlayfs' ? 'active' : 'snapshot';
      throw failedPrecondition(`failed to get ${what} mount: requested snapshot ${r.bkey} not active or view`);
    }
    return this.driver.mounts(r);
  }

  async commit(ctx: Ctx, name: string, key: string, given: Labels = {}): Promise<void> {
    const ns = namespaceRequired(ctx);
    validateLabels(given);
    const labels = dropEmpty(given);
    await this.inNamespace(ns, async () => {
      const check = async (get: <T>(k: string) => Promise<T | undefined>): Promise<SnapRecord> => {
        if (await get(this.recKey(ns, name))) throw alreadyExists(`snapshot "${name}"`);
        const r = await get<SnapRecord>(this.recKey(ns, key));
        if (!r) throw notFound(`snapshot ${key} does not exist`);
        if (r.kind !== 'ACTIVE') throw failedPrecondition(`failed to commit snapshot: snapshot "${r.bkey}" is not active`);
        return r;
      };
      const r = await check((k) => this.db.get(k));
      const lease = ctx.lease;
      if (lease) await this.opts.leases?.add(ns, lease, { type: `snapshots/${this.name}`, id: name });
      try {
        const usage = await diskUsage(this.driver.usageDir(r.id));
        faultPoint('snapshot-commit-measured');
        const keys = [this.recKey(ns, name), this.recKey(ns, key), ...(r.parent ? [this.recKey(ns, r.parent)] : []), this.seqKey(ns)];
        await this.db.transact(keys, async (tx) => {
          const cur = await check((k) => tx.get(k));
          if (cur.id !== r.id) throw notFound(`snapshot ${key} does not exist`); // removed and made again meanwhile
          const t = this.now();
          tx.put(this.recKey(ns, name), { ...cur, bkey: `${ns}/${await this.nextSeq(tx, ns)}/${name}`, kind: 'COMMITTED', labels, created: t, updated: t, usage } satisfies SnapRecord);
          tx.del(this.recKey(ns, key));
          tx.put(this.idKey(cur.id), { ns, name });
          if (cur.parent) {
            tx.del(this.childKey(ns, cur.parent, key));
            tx.put(this.childKey(ns, cur.parent, name), 1);
          }
          this.events.emit(tx, ns, '/snapshot/commit', { key, name });
        });
      } catch (e) {
        if (lease) await this.opts.leases?.remove(ns, lease, { type: `snapshots/${this.name}`, id: name }).catch(() => undefined);
        throw e;
      }
      if (lease) await this.opts.leases?.remove(ns, lease, { type: `snapshots/${this.name}`, id: key });
    });
  }

  async remove(ctx: Ctx, name: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    const first = await this.record(ns, name);
    const keys = [this.recKey(ns, name), ...(first.parent ? [this.recKey(ns, first.parent)] : [])];
    const r = await this.db.transact(keys, async (tx) => {
      const r = await tx.get<SnapRecord>(this.recKey(ns, name));
      if (!r) throw notFound(`snapshot ${name} does not exist`);
      if (r.parent !== first.parent) throw notFound(`snapshot ${name} does not exist`); // made again meanwhile: the caller may retry
      if (await this.db.hasPrefix(prefix('child', this.name, ns, name))) throw failedPrecondition('cannot remove snapshot with child');
      tx.del(this.recKey(ns, name));
      tx.del(this.idKey(r.id));
      if (r.parent) tx.del(this.childKey(ns, r.parent, name));
      this.events.emit(tx, ns, '/snapshot/remove', { key: name });
      return r;
    });
    faultPoint('snapshot-remove-recorded');
    await this.removeDir(r.id);
    if (ctx.lease) await this.opts.leases?.remove(ns, ctx.lease, { type: `snapshots/${this.name}`, id: name });
  }

  /**
   * Renamed out of the way before the answer, its files deleted after it: the deletion was a
   * round trip through libuv's pool per entry on the path of `ctr run --rm`, and an `rm-` folder
   * is nobody's snapshot (Cleanup removes one a crash left).
   */
  private async removeDir(id: string): Promise<void> {
    const gone = join(this.driver.dir, `rm-${id}`);
    try {
      await rename(join(this.driver.dir, id), gone);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // a native view has none
      throw e;
    }
    this.removing.set(
      `rm-${id}`,
      rm(gone, { recursive: true, force: true })
        .catch((e) => console.error(`snapshot: removing ${gone}: ${(e as Error).message}`))
        .finally(() => this.removing.delete(`rm-${id}`)),
    );
  }

  /** Resolves once the folders of removed snapshots are deleted. */
  async removed(): Promise<void> {
    await Promise.all([...this.removing.values()]);
  }

  async stat(ctx: Ctx, name: string): Promise<Info> {
    const ns = namespaceRequired(ctx);
    return toInfo(name, await this.record(ns, name));
  }

  /** Labels are the only mutable field: `labels` replaces them, `labels.<key>` sets (or with an empty value removes) one. */
  async update(ctx: Ctx, info: { name?: string; labels?: Labels }, paths: string[]): Promise<Info> {
    const ns = namespaceRequired(ctx);
    const name = info.name ?? '';
    if (!name) throw invalidArgument();
    const given = info.labels ?? {};
    return this.db.transact([this.recKey(ns, name)], async (tx) => {
      const r = await tx.get<SnapRecord>(this.recKey(ns, name));
      if (!r) throw notFound(`snapshot ${name} does not exist`);
      let labels: Labels = { ...r.labels };
      if (paths.length) {
        for (const p of paths) {
          if (p.startsWith('labels.')) {
            const k = p.slice('labels.'.length);
            labels[k] = given[k] ?? '';
          } else if (p === 'labels') {
            labels = { ...given };
          } else {
            throw invalidArgument(`cannot update "${p}" field on snapshot "${name}"`);
          }
        }
      } else {
        labels = { ...given };
      }
      validateLabels(labels);
      const next: SnapRecord = { ...r, labels: dropEmpty(labels), updated: this.now() };
      tx.put(this.recKey(ns, name), next);
      return toInfo(name, next);
    });
  }

  /** The namespace's snapshots matching any of `filters`, in name order (byte order, as bolt keeps them). */
  async list(ctx: Ctx, filters: string[] = []): Promise<Info[]> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const out: Info[] = [];
    const from = prefix('snap', this.name, ns);
    for await (const [k, r] of this.db.entries<SnapRecord>(from)) {
      const info = toInfo(unescapePart(k.slice(from.length)), r);
      const match = f.match({
        field: ([head, ...rest]) => {
          switch (head) {
            case 'kind':
              return rest.length ? undefined : kindName[info.kind];
            case 'name':
              return rest.length ? undefined : info.name;
            case 'parent':
              return rest.length ? undefined : info.parent;
            case 'labels':
              return rest.length ? info.labels[rest.join('.')] : undefined;
            default:
              return undefined;
          }
        },
      });
      if (match) out.push(info);
    }
    return out.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  }

  /** An active snapshot's directory is measured now; a committed one's was at its commit; a view's is none. */
  async usage(ctx: Ctx, name: string): Promise<Usage> {
    const ns = namespaceRequired(ctx);
    const r = await this.record(ns, name);
    if (r.kind === 'ACTIVE') return diskUsage(this.driver.usageDir(r.id));
    return r.usage ?? { size: 0, inodes: 0 };
  }

  /** Every namespace's snapshots of this snapshotter, as the collector reads them (parents, labels). */
  async gcRecords(): Promise<NonNullable<GcRecords['snapshots']>> {
    const out: NonNullable<GcRecords['snapshots']> = [];
    const from = prefix('snap', this.name);
    for await (const [k, r] of this.db.entries<SnapRecord>(from)) {
      const [ns, name] = k.slice(from.length).split('/').map(unescapePart);
      out.push({ ns: ns!, snapshotter: this.name, name: name!, parent: r.parent, labels: r.labels ?? {} });
    }
    return out;
  }

  /**
   * Removes the snapshots the collector found unreferenced (each as Remove does, with its
   * /snapshot/remove event), children before their parents; stops once `live` turns false.
   * Answers how many went and the bytes their directories held.
   */
  async collect(list: { ns: string; name: string }[], live: () => boolean): Promise<{ removed: number; bytes: number }> {
    let left = list;
    let removed = 0;
    let bytes = 0;
    while (left.length && live()) {
      const next: typeof left = [];
      for (const s of left) {
        if (!live()) break;
        const r = await this.db.get<SnapRecord>(this.recKey(s.ns, s.name));
        if (!r) continue;
        if (await this.db.hasPrefix(prefix('child', this.name, s.ns, s.name))) {
          next.push(s); // its children go first
          continue;
        }
        const size = r.kind === 'ACTIVE' ? await diskUsage(this.driver.usageDir(r.id)).then((u) => u.size, () => 0) : (r.usage?.size ?? 0);
        try {
          await this.remove({ namespace: s.ns }, s.name);
          removed++;
          bytes += size;
        } catch (e) {
          if (toBerthError(e).code !== Code.NotFound) throw e;
        }
      }
      if (next.length === left.length) break; // children that are not ours to remove keep their parents
      left = next;
    }
    return { removed, bytes };
  }

  /** Removes every directory no record holds: leftovers of a crash, or of a removal cut short. */
  async cleanup(): Promise<string[]> {
    const removed: string[] = [];
    let names: string[];
    try {
      names = await readdir(this.driver.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return removed;
      throw e;
    }
    for (const n of names) {
      const id = /^(?:new-|rm-)?(\d+)$/.exec(n)?.[1];
      if (id !== undefined) {
        // an id that is being made is pending until its record is committed, so after this
        // check the store has whatever record it will ever get
        if (this.pending.has(id) || this.removing.has(n)) continue;
        if (n === id && (await this.db.get(this.idKey(id)))) continue;
      }
      // anything else (a stray name included) is not ours to keep: rename, then delete, so a
      // half-deleted folder is never taken for a snapshot
      const gone = n.startsWith('rm-') ? join(this.driver.dir, n) : join(this.driver.dir, `rm-${id ?? 'x'}-${randomBytes(4).toString('hex')}`);
      if (gone !== join(this.driver.dir, n)) await rename(join(this.driver.dir, n), gone).catch(() => undefined);
      await rm(gone, { recursive: true, force: true });
      removed.push(n);
    }
    return removed;
  }
}

function toInfo(name: string, r: SnapRecord): Info {
  return { name, parent: r.parent, kind: r.kind, created_at: r.created, updated_at: r.updated, labels: { ...r.labels } };
}
