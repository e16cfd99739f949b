// Garbage collection across processes: the write barrier every data-holding service runs.
//
// containerd marks while it holds its database's write lock, so what it marks is one consistent
// state. Berth's records are spread over five processes (images, containers, leases, content,
// snapshot), and reading them one after another is not one state: a pull that creates its
// image (images already read) and then drops its lease (leases not yet read) would leave its
// blobs marked by neither. So the collector first asks every service to *enter* epoch E:
//
//  - the service closes its gate: writes that have not started wait (every write to its records
//    goes through the gated store, `barrier.gate(db)`), writes in flight finish;
//  - it answers its records and their references (GcRecords) as they are now; they cannot change
//    until the barrier is released, so once every service has answered, the union is the state
//    of the node at that moment: one consistent cut, like containerd's under its lock;
//  - the collector marks, asks content, snapshot and leases to sweep exactly what was unreferenced
//    in epoch E (the sweep bypasses the gate), and releases the barrier everywhere.
//
// Bounds, so a collector that dies blocks nobody for long: a barrier lapses by itself after its
// ttl; a sweep for an epoch that lapsed (or was taken over by a newer one) is refused; a sweep
// carries a deadline before the earliest moment any service's barrier can lapse and stops
// deleting once it is past. The barrier is persisted in the service's store, so a service killed
// and restarted mid-collection comes back closed until the barrier's end: its answer stays true.
// A service that does not answer makes the collection skip: nothing is deleted on partial
// knowledge.
//
// Writers keep "reference first": a lease (or an image, a parent, a label) holds a resource
// before the resource is created or the old reference dropped. So any consistent cut finds
// every resource in use referenced.
import { jsonBytes, parseJson } from './json.js';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { NatsConnection } from '@nats-io/nats-core';
import { codec } from '@berth/api';
import { BerthError, Code, failedPrecondition, invalidArgument, unavailable } from '@berth/errdefs';
import type { BatchOp, Store, Txn } from '@berth/store';
import { outboxPrefix } from './outbox.js';
import type { BusClient } from './client.js';
import type { BusServer } from './server.js';
import { rpcSubject, token } from './subjects.js';

export const gcEnterMethod = 'GcEnter';
export const gcSweepMethod = 'GcSweep';
export const gcReleaseMethod = 'GcRelease';

/** The services whose records the collector reads, each answering its part of GcRecords. */
export const gcServices = ['images', 'containers', 'leases', 'content', 'snapshot'];

/** Where services tell the collector about their writes (containerd's mutation callback): JSON `{mutations, deletions, ts}`, no reply. */
export const gcMutatedSubject = (node: string) => rpcSubject(node, 'gc', 'Mutated');
/** Where the collector publishes each collection's figures, as JSON. */
export const gcCollectedSubject = (node: string) => `berth.gc.${token(node)}.collected`;

export type GcLabels = Record<string, string>;

/** Records and the edges out of them, as each service answers them (JSON). */
export interface GcRecords {
  images?: { ns: string; name: string; target: string; labels: GcLabels }[];
  containers?: { ns: string; id: string; snapshotter: string; snapshot_key: string; labels: GcLabels }[];
  leases?: { ns: string; id: string; labels: GcLabels; resources: { type: string; id: string }[] }[];
  content?: { ns: string; digest: string; size: number; labels: GcLabels }[];
  /** `expires`: ms since the epoch, for an ingest no lease holds */
  ingests?: { ns: string; ref: string; expires?: number; expected?: string }[];
  snapshots?: { ns: string; snapshotter: string; name: string; parent: string; labels: GcLabels }[];
}

/** What to remove, per service. */
export interface GcSweep {
  content?: { ns: string; digest: string }[];
  ingests?: { ns: string; ref: string }[];
  snapshots?: { ns: string; snapshotter: string; name: string }[];
  leases?: { ns: string; id: string }[];
}

/** What a sweep removed: counts by kind (`content`, `blobs` for files, `ingests`, `snapshots`, `leases`) and bytes freed on disk. */
export interface GcSwept {
  removed: Record<string, number>;
  bytes: number;
}

/** Stops a sweep: false once its epoch lapsed or its deadline passed. */
export type Live = () => boolean;

export interface BarrierOptions {
  /** told after each committed write: whether it removed a reference (containerd's "dirty") */
  mutated?: (dirty: boolean) => void;
  /** which writes remove references; default: those that emit a delete event */
  dirty?: (ops: readonly BatchOp[]) => boolean;
  /** told of each committed write's operations (a sweep's own writes excepted) */
  written?: (ops: readonly BatchOp[]) => void;
}

const barrierKey = '~gc/barrier';
const deleteTopics = /\.(images\.delete|containers\.delete|content\.delete|snapshot\.remove)$/;

/** The default: a write is dirty when it emits /images/delete, /containers/delete, /content/delete or /snapshot/remove. */
export function emitsDelete(ops: readonly BatchOp[]): boolean {
  return ops.some((o) => o.type === 'put' && o.key.startsWith(outboxPrefix) && deleteTopics.test(String((o.value as { s?: string })?.s ?? '')));
}

interface Held {
  epoch: string;
  until: number;
  opened: Promise<void>;
  open: () => void;
  timer: NodeJS.Timeout;
  sweeping: number;
  lapsed: boolean;
}

export class CollectionBarrier {
  private held?: Held;
  private inflight = 0;
  private drained: (() => void)[] = [];
  /** set while a sweep runs: its writes pass the closed gate */
  private readonly sweeper = new AsyncLocalStorage<string>();

  private constructor(private readonly db: Store, private readonly o: BarrierOptions) {}

  /** Opens the barrier of a service's store; a barrier persisted by an earlier run that has not ended is taken up again. */
  static async open(db: Store, o: BarrierOptions = {}): Promise<CollectionBarrier> {
    const b = new CollectionBarrier(db, o);
    const saved = await db.get<{ epoch: string; until: number }>(barrierKey);
    if (saved && saved.until > Date.now()) b.close(saved.epoch, saved.until);
    else if (saved) await db.del(barrierKey);
    return b;
  }

  /** The epoch now held, if any. */
  get epoch(): string | undefined {
    return this.held?.epoch;
  }

  /** `store`, with every write waiting while the barrier is held (and counted for the collector's triggers). */
  gate(store: Store = this.db): Store {
    const write = <T>(fn: () => Promise<T>, ops: () => readonly BatchOp[]) => this.write(fn, ops);
    return {
      get: (k) => store.get(k),
      entries: (p) => store.entries(p),
      hasPrefix: (p) => store.hasPrefix(p),
      close: () => store.close(),
      put: (key, value) => write(() => store.put(key, value), () => [{ type: 'put', key, value }]),
      del: (key) => write(() => store.del(key), () => [{ type: 'del', key }]),
      batch: (ops) => write(() => store.batch(ops), () => ops),
      transact: <R>(keys: string[], fn: (tx: Txn) => Promise<R>) => {
        let seen: readonly BatchOp[] = [];
        return write(
          () =>
            store.transact(keys, async (tx) => {
              seen = tx.ops;
              return fn(tx);
            }),
          () => seen,
        );
      },
    };
  }

  private async write<T>(fn: () => Promise<T>, ops: () => readonly BatchOp[]): Promise<T> {
    const sweeping = this.sweeper.getStore();
    if (sweeping === undefined) {
      while (this.held) await this.held.opened;
      this.inflight++;
    }
    try {
      const r = await fn();
      if (sweeping === undefined) {
        const done = ops();
        if (done.length) {
          this.o.written?.(done);
          this.o.mutated?.((this.o.dirty ?? emitsDelete)(done));
        }
      }
      return r;
    } finally {
      if (sweeping === undefined && --this.inflight === 0) for (const d of this.drained.splice(0)) d();
    }
  }

  private close(epoch: string, until: number): Held {
    if (this.held) this.openGate(this.held);
    let open!: () => void;
    const opened = new Promise<void>((r) => (open = r));
    const h: Held = { epoch, until, opened, open, sweeping: 0, lapsed: false, timer: setTimeout(() => this.lapse(h), Math.max(0, until - Date.now())) };
    this.held = h;
    return h;
  }

  private lapse(h: Held): void {
    h.lapsed = true;
    // a sweep in progress is this process's own work: the gate opens when it ends
    if (!h.sweeping) this.openGate(h);
  }

  private openGate(h: Held): void {
    clearTimeout(h.timer);
    if (this.held === h) this.held = undefined;
    h.open();
    void this.db.get<{ epoch: string }>(barrierKey).then((s) => (s?.epoch === h.epoch && this.held === undefined ? this.db.del(barrierKey) : undefined)).catch(() => undefined);
  }

  /**
   * Enters epoch `epoch` for `ttl` ms: closes the gate, persists it, waits for writes in flight.
   * A newer epoch takes over an older one (its collector is presumably gone; its sweeps are then
   * refused). Writes that do not finish within half the ttl make the enter fail (and reopen).
   */
  async enter(epoch: string, ttl: number): Promise<void> {
    if (!epoch || !(ttl > 0)) throw invalidArgument('epoch and ttl_ms required');
    const h = this.close(epoch, Date.now() + ttl);
    try {
      await this.db.put(barrierKey, { epoch, until: h.until });
      if (this.inflight > 0) {
        let timer!: NodeJS.Timeout;
        const drained = new Promise<void>((r) => this.drained.push(r));
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(unavailable(`collection ${epoch}: writes in flight did not finish within ${Math.round(ttl / 2)} ms`)), ttl / 2);
        });
        try {
          await Promise.race([drained, late]);
        } finally {
          clearTimeout(timer);
        }
      }
      if (this.held !== h) throw failedPrecondition(`collection ${epoch}: barrier taken over`);
    } catch (e) {
      this.openGate(h);
      throw e;
    }
  }

  /**
   * Runs a sweep of epoch `epoch` past the closed gate. Refused when the epoch is not the one
   * held (it lapsed, or a newer collection took over) or `deadline` (ms since the epoch) passed;
   * `fn` must stop deleting once its `live()` turns false.
   */
  async sweep<T>(epoch: string, deadline: number, fn: (live: Live) => Promise<T>): Promise<T> {
    const h = this.held;
    if (!h || h.epoch !== epoch || h.lapsed) throw failedPrecondition(`collection ${epoch}: barrier lapsed`);
    if (Date.now() >= deadline) throw failedPrecondition(`collection ${epoch}: past its deadline`);
    h.sweeping++;
    try {
      return await this.sweeper.run(epoch, () => fn(() => this.held === h && !h.lapsed && Date.now() < deadline));
    } finally {
      if (--h.sweeping === 0 && h.lapsed) this.openGate(h);
    }
  }

  /** Ends epoch `epoch` (nothing when another one is held). */
  release(epoch: string): void {
    if (this.held?.epoch === epoch) this.openGate(this.held);
  }

  stop(): void {
    if (this.held) clearTimeout(this.held.timer);
  }
}

export interface CollectionServe {
  /** the service's records and their references, read while the barrier is held */
  references: () => Promise<GcRecords>;
  /** removes what the collector found unreferenced; only content, snapshot and leases have one */
  sweep?: (req: GcSweep, live: Live) => Promise<GcSwept>;
  /**
   * Whether the sweep has work of its own even when nothing was found unreferenced (content: blob
   * files that no record may name any more); read with the records, so the collector asks for a
   * sweep only then
   */
  untidy?: () => boolean;
}

/** Answers the collector's GcEnter, GcSweep and GcRelease on `server` (JSON in and out). */
export function serveCollection(server: BusServer, barrier: CollectionBarrier, o: CollectionServe): void {
  server.raw(gcEnterMethod, async (data) => {
    const { epoch = '', ttl_ms = 0 } = parseJson<{ epoch?: string; ttl_ms?: number }>(data);
    await barrier.enter(epoch, ttl_ms);
    try {
      return jsonBytes({ records: await o.references(), untidy: o.untidy?.() ?? false });
    } catch (e) {
      barrier.release(epoch);
      throw e;
    }
  });
  server.raw(gcSweepMethod, async (data) => {
    const { epoch = '', deadline = 0, sweep = {} } = parseJson<{ epoch?: string; deadline?: number; sweep?: GcSweep }>(data);
    if (!o.sweep) return jsonBytes({ removed: {}, bytes: 0 } satisfies GcSwept);
    return jsonBytes(await barrier.sweep(epoch, deadline, (live) => o.sweep!(sweep, live)));
  });
  server.raw(gcReleaseMethod, async (data) => {
    barrier.release(parseJson<{ epoch?: string }>(data).epoch ?? '');
    return jsonBytes({});
  });
}

/**
 * A service's barrier over its store `db`; when the node runs a collector (`services` has `gc`),
 * writes are reported to it, at most every 50 ms, for its mutation and deletion thresholds.
 */
export async function collectionBarrier(nc: NatsConnection, node: string, services: string[], db: Store, o: Omit<BarrierOptions, 'mutated'> = {}): Promise<CollectionBarrier> {
  if (!services.includes('gc')) return CollectionBarrier.open(db, o);
  let mutations = 0;
  let deletions = 0;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    const m = { mutations, deletions, ts: Date.now() };
    mutations = deletions = 0;
    try {
      if (!nc.isClosed()) nc.publish(gcMutatedSubject(node), JSON.stringify(m));
    } catch {
      // a notice lost costs a later collection, nothing more: the timer collects anyway
    }
  };
  return CollectionBarrier.open(db, {
    ...o,
    mutated: (dirty) => {
      mutations++;
      if (dirty) deletions++;
      if (!timer) {
        timer = setTimeout(flush, 50);
        timer.unref();
      }
    },
  });
}

/**
 * Runs a collection that starts after this call and waits for it (containerd's ScheduleAndWait,
 * behind a synchronous lease or image delete); nothing when the node runs no collector.
 */
export async function gcCollect(client: BusClient, node: string, services: string[]): Promise<void> {
  if (!services.includes('gc')) return;
  await client.unary(rpcSubject(node, 'gc', 'Collect'), codec('berth.gc.v1.CollectRequest').encode({}), {}, { timeout: 120_000 });
}
