// One collection across the node's services (the protocol: @berth/bus gc.ts): enter epoch E
// everywhere (writes wait, records come back), mark, sweep exactly what E left unreferenced, then
// release (a service with nothing to sweep as soon as the mark is done). Any service that does
// not answer its enter makes the collection skip. No NATS here: the services are reached through
// `Peer`.
import { randomBytes } from 'node:crypto';
import { gcEnterMethod, gcReleaseMethod, gcServices, gcSweepMethod, type GcRecords, type GcSweep, type GcSwept } from '@berth/bus';
import { BerthError, Code, toBerthError } from '@berth/errdefs';
import { mark } from './mark.js';
import type { Collected } from './scheduler.js';

/** Calls `method` of the node's service `service` with a JSON body; rejects with a BerthError. */
export type Peer = (service: string, method: string, body: unknown, timeoutMs: number) => Promise<unknown>;

export interface CollectStats extends Collected {
  epoch: string;
  /** ms since the epoch */
  startedAt: number;
  /** how long writes waited (enter to release), ms */
  barrierMs: number;
  marked: number;
  removed: { content: number; blobs: number; ingests: number; snapshots: number; leases: number };
  bytes: number;
  /** the services asked to sweep */
  swept: string[];
}

export interface CollectorOptions {
  /** the node's services: those of gcServices among them are asked */
  services: string[];
  /** how long a barrier may hold before it lapses by itself, ms */
  ttl: number;
}

// which service sweeps which part of the unreferenced set
const sweepers: [string, (s: GcSweep) => GcSweep][] = [
  ['content', (s) => ({ content: s.content ?? [], ingests: s.ingests ?? [] })],
  ['snapshot', (s) => ({ snapshots: s.snapshots ?? [] })],
  ['leases', (s) => ({ leases: s.leases ?? [] })],
];

const isEmpty = (s: GcSweep) => Object.values(s).every((v) => !v || v.length === 0);

export class Collector {
  private seq = 0;
  private readonly id = randomBytes(3).toString('hex');

  constructor(private readonly call: Peer, private readonly o: CollectorOptions) {}

  async collect(): Promise<CollectStats> {
    const epoch = `${this.id}-${++this.seq}`;
    const startedAt = Date.now();
    const ttl = this.o.ttl;
    // every barrier lapses at ttl after it was entered, so no earlier than startedAt + ttl; sweeps
    // stop a margin before that
    const deadline = startedAt + ttl - Math.min(2000, ttl / 5);
    const asked = gcServices.filter((s) => this.o.services.includes(s));
    const released = new Set<string>();
    const release = (services: string[]) => {
      for (const s of services) released.add(s);
      return Promise.allSettled(services.map((s) => this.call(s, gcReleaseMethod, { epoch }, 2000)));
    };
    let releasing: Promise<unknown> = Promise.resolve();
    const stats: CollectStats = { epoch, startedAt, durationMs: 0, barrierMs: 0, marked: 0, removed: { content: 0, blobs: 0, ingests: 0, snapshots: 0, leases: 0 }, bytes: 0, swept: [] };
    try {
      const answers = await Promise.allSettled(asked.map((s) => this.call(s, gcEnterMethod, { epoch, ttl_ms: ttl }, Math.max(1000, deadline - Date.now()))));
      const failed = answers.map((a, i) => [asked[i]!, a] as const).filter(([, a]) => a.status === 'rejected');
      if (failed.length) {
        const why = failed.map(([s, a]) => `${s}: ${toBerthError((a as PromiseRejectedResult).reason).message}`).join('; ');
        throw new BerthError(Code.Unavailable, `gc: collection skipped, not every service answered (${why})`);
      }
      const records: GcRecords = {};
      const untidy = new Set<string>();
      answers.forEach((a, i) => {
        const v = (a as PromiseFulfilledResult<unknown>).value as { records?: GcRecords; untidy?: boolean };
        Object.assign(records, v.records ?? {});
        if (v.untidy) untidy.add(asked[i]!);
      });
      const m = mark(records, Date.now());
      stats.marked = m.marked.size;
      if (m.nextExpiry !== undefined) stats.nextExpiry = m.nextExpiry;
      const parts = sweepers
        .filter(([s]) => asked.includes(s))
        .map(([s, part]) => [s, part(m.sweep)] as const)
        // a sweep with nothing unreferenced to remove is asked only of a service that says it has
        // work of its own (content, when blob files may have lost their last record)
        .filter(([s, part]) => untidy.has(s) || !isEmpty(part));
      // the cut is taken: a service with nothing to sweep is let go now, not after the sweeps. A
      // write there from here on can only reference what a writer already held (reference
      // first), which the cut found referenced and no sweep removes (containers and images are
      // never swept: their writes wait for a collection's read only)
      stats.swept = parts.map(([s]) => s);
      releasing = release(asked.filter((s) => !parts.some(([p]) => p === s)));
      const swept = await Promise.allSettled(
        parts.map(async ([s, part]) => (await this.call(s, gcSweepMethod, { epoch, deadline, sweep: part }, Math.max(1000, deadline - Date.now() + 1000))) as GcSwept),
      );
      const errors: string[] = [];
      for (const r of swept) {
        if (r.status === 'rejected') {
          errors.push(toBerthError(r.reason).message);
          continue;
        }
        for (const [k, n] of Object.entries(r.value.removed ?? {})) if (k in stats.removed) stats.removed[k as keyof CollectStats['removed']] += n;
        stats.bytes += r.value.bytes ?? 0;
      }
      // a sweep that failed removed less, never more: what it left goes at the next collection
      if (errors.length) throw new BerthError(Code.Unavailable, `gc: collection ${epoch} incomplete: ${errors.join('; ')}`);
    } finally {
      await Promise.all([releasing, release(asked.filter((s) => !released.has(s)))]);
      stats.barrierMs = Date.now() - startedAt;
      stats.durationMs = stats.barrierMs;
    }
    return stats;
  }
}
