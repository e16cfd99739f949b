// A record and the event that announces it are one fact. A service writes the event into an
// outbox in its own store, in the same atomic batch as the record (`outbox.emit(tx, ...)` inside
// `store.transact`); this publisher drains the outbox into the BERTH_EVENTS stream, in key order,
// each event with a message id, and deletes an entry only once JetStream acknowledged it. So:
//  - an API call succeeds once its record is committed; the event follows;
//  - JetStream down, or the process killed between commit and publish: the event waits in the
//    store and goes out when JetStream is back or the service restarts, never lost;
//  - an ack lost after JetStream stored the event: the retry carries the same message id and
//    JetStream's duplicate window drops it, never doubled.
import { readFileSync, rmSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/nats-core';
import { toAny, warmCodecs } from '@berth/api';
import type { Store, Txn } from '@berth/store';
import { encodeEnvelope, envelopeType, nowEnvelope, storeEvent, type Envelope } from './events.js';
import { H, headers } from './headers.js';
import { eventSubject } from './subjects.js';
import { eventTypes, type Topic } from './topics.js';

/** where the outbox keeps its entries in a service's store (the collector's mutation count reads them) */
export const outboxPrefix = '~outbox/';

interface Entry {
  /** subject */
  s: string;
  /** the encoded envelope, base64 */
  d: string;
}

/** Where a service's logic writes its events: into the transaction that writes the record. */
export interface EventSink {
  emit(tx: Txn, namespace: string, topic: Topic, event: Record<string, unknown>): void;
}

/** For tests of a service's logic: events recorded when their transaction commits. */
export function eventRecorder(): EventSink & { events: [string, Topic, Record<string, unknown>][] } {
  const events: [string, Topic, Record<string, unknown>][] = [];
  return { events, emit: (tx, ns, topic, e) => tx.afterCommit(() => void events.push([ns, topic, e])) };
}

export interface OutboxOptions {
  /** the service's bus name: with the node, it makes message ids unique across the cluster */
  service: string;
  node: string;
  /** most events in flight to JetStream at once */
  batch?: number;
}

/** committed events kept in memory for the drain at most; beyond, it reads them from the store */
const maxPending = 4096;
/** batches whose acks are awaited at once */
const pipeline = 4;

export class Outbox implements EventSink {
  private seq = 0;
  /**
   * Committed entries not yet stored in JetStream, as their commits announced them: the drain
   * takes these instead of scanning the store after every commit (two iterator scans per event
   * were a measurable share of a service's CPU per call). The store stays the truth: it is
   * scanned at start, after a failed publish, and whenever this map is full.
   */
  private readonly pending = new Map<string, Entry>();
  /** entries sent to JetStream whose acks have not come back: the next batch leaves them out */
  private readonly inflight = new Set<string>();
  private scan = true;
  private running = false;
  private again = false;
  private stopped = false;
  private retry?: NodeJS.Timeout;
  private backoff = 100;
  private idle: (() => void)[] = [];

  constructor(private readonly store: Store, private readonly nc: NatsConnection, private readonly o: OutboxOptions) {}

  /** Picks up where the last run stopped, and publishes what it left. */
  async start(): Promise<this> {
    // the first event of each kind would otherwise pay for its codec inside a write's transaction
    warmCodecs([envelopeType, ...new Set(Object.values(eventTypes))]);
    let last = 0;
    for await (const [k] of this.store.entries(outboxPrefix)) last = Number(k.slice(outboxPrefix.length));
    // microseconds since the epoch: unique and increasing across restarts of one store
    this.seq = Math.max(last + 1, Date.now() * 1000);
    // JetStream back after an outage: do not wait for the next backoff step
    void (async () => {
      for await (const s of this.nc.status()) if (s.type === 'reconnect') this.kick();
    })().catch(() => undefined);
    this.kick();
    return this;
  }

  /** Queues the event in the transaction's batch; it is published once the batch commits. */
  emit(tx: Txn, namespace: string, topic: Topic, event: Record<string, unknown>): void {
    this.forward(tx, nowEnvelope(namespace, topic, toAny(eventTypes[topic], event)));
  }

  /**
   * Queues an envelope another process made, as it came (its timestamp and event bytes): what a
   * shim forwards to the tasks service.
   */
  forward(tx: Txn, env: Envelope): void {
    const { namespace, topic } = env;
    const key = outboxPrefix + String(this.seq++).padStart(17, '0');
    const entry: Entry = { s: eventSubject(namespace, topic), d: Buffer.from(encodeEnvelope(env)).toString('base64') };
    tx.put(key, entry);
    tx.afterCommit(() => {
      faultPoint('outbox-after-commit');
      if (this.pending.size < maxPending) this.pending.set(key, entry);
      else this.scan = true;
      this.kick();
    });
  }

  /** Drains now (a commit happened, or JetStream may be back). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.retry);
    this.retry = undefined;
    this.running = true;
    void this.drain().finally(() => {
      this.running = false;
      // a commit between the drain's last look and here: its kick found the drain running
      if (this.again && !this.retry) this.kick();
    });
  }

  /**
   * Publishes in batches, each sent in key order on the one connection (so JetStream stores them
   * in that order), and starts the next batch without waiting for the acks of the ones before
   * (up to `pipeline` in flight): an event committed while a batch waits for its acks goes out at
   * once instead of a round trip later (the /tasks/exit that `docker run` waits on).
   */
  private async drain(): Promise<void> {
    const running = new Set<Promise<void>>();
    let failure: { err: unknown } | undefined;
    try {
      do {
        this.again = false;
        // the store is read only while nothing is in flight: an entry read just before its
        // publish's cleanup removed it would go out again
        if (this.scan && running.size === 0) {
          this.scan = false;
          for await (const [k, e] of this.store.entries<Entry>(outboxPrefix)) {
            this.pending.set(k, e);
            if (this.pending.size >= maxPending) {
              this.scan = true; // more than fits: the rest on a later round
              break;
            }
          }
        }
        // in key order (a commit's order can differ from its keys' by a little)
        const batch: [string, Entry][] = [...this.pending.keys()]
          .filter((k) => !this.inflight.has(k))
          .sort()
          .slice(0, this.o.batch ?? 256)
          .map((k) => [k, this.pending.get(k)!]);
        if (batch.length) {
          const p: Promise<void> = this.publish(batch).then(
            () => void running.delete(p),
            (err) => {
              running.delete(p);
              failure ??= { err };
            },
          );
          running.add(p);
          this.again = true; // more than one batch waits, maybe
        }
        if (running.size >= pipeline || (!batch.length && running.size)) await Promise.race(running);
      } while ((this.again || running.size > 0 || this.scan) && !failure && !this.stopped);
      await Promise.all(running);
      if (failure) throw failure.err;
      this.backoff = 100;
      for (const f of this.idle.splice(0)) f();
    } catch (err) {
      await Promise.allSettled(running);
      // the store is the truth after a failure (a delete may have failed after the publish)
      this.pending.clear();
      this.inflight.clear();
      this.scan = true;
      this.again = false;
      if (this.stopped) return;
      if (this.backoff === 100) console.error(`${this.o.service}: events wait in the outbox: ${(err as Error).message}`);
      this.retry = setTimeout(() => this.kick(), this.backoff);
      this.retry.unref();
      this.backoff = Math.min(5000, this.backoff * 2);
    }
  }

  /** Stores one batch in JetStream and removes from the outbox what it acknowledged; rejects with the first failure. */
  private async publish(batch: [string, Entry][]): Promise<void> {
    for (const [k] of batch) this.inflight.add(k);
    try {
      const results = await Promise.allSettled(
        batch.map(([k, e]) => {
          const h = headers();
          h.set(H.node, this.o.node);
          // JetStream drops a second copy with the same id (a publish whose ack was lost)
          h.set('Nats-Msg-Id', `${this.o.service}.${this.o.node}.${k.slice(outboxPrefix.length)}`);
          return storeEvent(this.nc, e.s, Buffer.from(e.d, 'base64'), h);
        }),
      );
      const done = batch.filter((_, i) => results[i]!.status === 'fulfilled').map(([k]) => ({ type: 'del' as const, key: k }));
      if (done.length) await this.store.batch(done);
      for (const d of done) this.pending.delete(d.key);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    } finally {
      for (const [k] of batch) this.inflight.delete(k);
    }
  }

  /** Resolves once the outbox is empty (tests; a clean stop). */
  async flushed(): Promise<void> {
    for (;;) {
      let empty = true;
      for await (const _ of this.store.entries(outboxPrefix)) {
        empty = false;
        break;
      }
      if (empty) return;
      await new Promise<void>((r) => {
        this.idle.push(r);
        this.kick();
      });
    }
  }

  /** Events not yet stored stay in the outbox for the next start. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
  }
}

/**
 * A fault-injection point for crash tests (the outbox's, the snapshotter's): when
 * BERTH_FAULTS_FILE names a file that holds `name`, the process dies right there with SIGKILL
 * (once: the file is removed first), as a crash at that point would.
 */
export function faultPoint(name: string): void {
  const file = process.env.BERTH_FAULTS_FILE;
  if (!file) return;
  let want = '';
  try {
    want = readFileSync(file, 'utf8').trim();
  } catch {
    return;
  }
  if (want !== name) return;
  rmSync(file, { force: true });
  process.kill(process.pid, 'SIGKILL');
}
