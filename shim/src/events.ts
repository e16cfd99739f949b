// Events to the tasks service, as a stock shim forwards them (ttrpc Events/Forward to
// TTRPC_ADDRESS, namespace in `containerd-namespace-ttrpc`), except that none is ever dropped:
// each is written to a spool before it is sent, sent in order per container, retried until the
// endpoint acknowledges it, and only then removed. A restarted host sends what its spool holds.
import { eventTypes } from '@berth/bus/topics';
import { mkdirSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { codec, nowTimestamp, toAny, type Any, type Timestamp } from '@berth/api';
import { TtrpcClient } from '@berth/ttrpc';

const SERVICE = 'containerd.services.events.ttrpc.v1.Events';
const forwardRequest = codec('containerd.services.events.ttrpc.v1.ForwardRequest');

/** Topic to the event's message type: containerd's table, the one every Berth service uses. */
export const topicTypes: Record<string, string> = eventTypes;

interface Pending {
  seq: number;
  file: string;
  namespace: string;
  request: Uint8Array;
}

/** One container's ordered queue and its spool folder. */
class Queue {
  readonly items: Pending[] = [];
  seq = 0;
  sending = false;
  backoff = 0;
  /** drop the spool folder once empty (the container is gone) */
  retire = false;

  constructor(
    readonly dir: string,
    public address: string,
  ) {}
}

export interface ForwarderOptions {
  /** first retry delay, doubled up to maxDelayMs */
  minDelayMs?: number;
  maxDelayMs?: number;
  timeoutMs?: number;
  log?: (msg: string) => void;
}

export class Forwarder {
  private readonly queues = new Map<string, Queue>();
  private readonly clients = new Map<string, Promise<TtrpcClient>>();
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private readonly timeout: number;
  private readonly log: (msg: string) => void;
  private closed = false;

  constructor(
    private readonly spool: string,
    o: ForwarderOptions = {},
  ) {
    this.minDelay = o.minDelayMs ?? 100;
    this.maxDelay = o.maxDelayMs ?? 2000;
    this.timeout = o.timeoutMs ?? 5000;
    this.log = o.log ?? (() => {});
    mkdirSync(spool, { recursive: true });
  }

  /** Sends what every container's spool left by an earlier host holds. */
  resumeAll(): void {
    for (const key of readdirSync(this.spool)) {
      try {
        this.resume(key, readFileSync(join(this.spool, key, 'address'), 'utf8'));
      } catch {}
    }
  }

  /** Loads a container's spool left by an earlier host and sends it; `address` may have changed. */
  resume(key: string, address: string): void {
    const q = this.queue(key, address);
    let names: string[] = [];
    try {
      names = readdirSync(q.dir).filter((n) => /^\d+$/.test(n)).sort();
    } catch {}
    for (const name of names) {
      const seq = Number(name);
      if (q.items.some((i) => i.seq === seq)) continue;
      const file = join(q.dir, name);
      try {
        const data = readFileSync(file);
        const nsLen = data.readUInt16BE(0);
        q.items.push({ seq, file, namespace: data.subarray(2, 2 + nsLen).toString(), request: data.subarray(2 + nsLen) });
        q.seq = Math.max(q.seq, seq + 1);
      } catch {}
    }
    q.items.sort((a, b) => a.seq - b.seq);
    this.kick(q);
  }

  private queue(key: string, address: string): Queue {
    let q = this.queues.get(key);
    if (!q) {
      q = new Queue(join(this.spool, key), '');
      mkdirSync(q.dir, { recursive: true });
      this.queues.set(key, q);
    }
    if (q.address !== address) {
      q.address = address;
      writeFileSync(join(q.dir, 'address'), address);
    }
    return q;
  }

  /** Persists and queues one event; resolves nothing: delivery is the forwarder's from here. */
  publish(key: string, address: string, namespace: string, topic: string, event: Record<string, unknown>, timestamp: Timestamp = nowTimestamp()): void {
    const type = topicTypes[topic];
    if (!type) throw new Error(`unknown topic ${topic}`);
    const any: Any = toAny(type, event);
    const request = forwardRequest.encode({ envelope: { timestamp, namespace, topic, event: any } });
    const q = this.queue(key, address);
    const seq = q.seq++;
    const file = join(q.dir, String(seq).padStart(12, '0'));
    const ns = Buffer.from(namespace);
    const head = Buffer.alloc(2);
    head.writeUInt16BE(ns.length);
    writeFileSync(file, Buffer.concat([head, ns, request]));
    q.items.push({ seq, file, namespace, request });
    this.kick(q);
  }

  /** The container is gone: remove its spool once everything in it is delivered. */
  retire(key: string): void {
    const q = this.queues.get(key);
    if (!q) return;
    q.retire = true;
    this.kick(q);
  }

  pending(key?: string): number {
    if (key !== undefined) return this.queues.get(key)?.items.length ?? 0;
    let n = 0;
    for (const q of this.queues.values()) n += q.items.length;
    return n;
  }

  private kick(q: Queue): void {
    if (q.sending || this.closed) return;
    if (!q.items.length) {
      if (q.retire) this.drop(q);
      return;
    }
    q.sending = true;
    void this.sendHead(q);
  }

  private drop(q: Queue): void {
    for (const [k, v] of this.queues) if (v === q) this.queues.delete(k);
    rmSync(q.dir, { recursive: true, force: true });
  }

  private async sendHead(q: Queue): Promise<void> {
    const item = q.items[0]!;
    try {
      const client = await this.client(q.address);
      await client.call(SERVICE, 'Forward', item.request, { timeoutMs: this.timeout, metadata: { 'containerd-namespace-ttrpc': item.namespace } });
      q.items.shift();
      q.backoff = 0;
      try {
        unlinkSync(item.file);
      } catch {}
      q.sending = false;
      this.kick(q);
    } catch (e) {
      this.log(`forward to ${q.address} failed (will retry): ${(e as Error).message}`);
      this.dropClient(q.address);
      q.backoff = Math.min(this.maxDelay, q.backoff ? q.backoff * 2 : this.minDelay);
      setTimeout(() => {
        q.sending = false;
        this.kick(q);
      }, q.backoff).unref();
    }
  }

  private client(address: string): Promise<TtrpcClient> {
    let c = this.clients.get(address);
    if (!c) {
      const path = address.replace(/^unix:\/\//, '');
      c = TtrpcClient.connect(path, { timeoutMs: this.timeout });
      this.clients.set(address, c);
      c.then(
        (client) => void client.closed.then(() => this.clients.get(address) === c && this.clients.delete(address)),
        () => this.clients.get(address) === c && this.clients.delete(address),
      );
    }
    return c;
  }

  private dropClient(address: string): void {
    const c = this.clients.get(address);
    this.clients.delete(address);
    c?.then((client) => client.close(), () => {});
  }

  close(): void {
    this.closed = true;
    for (const a of [...this.clients.keys()]) this.dropClient(a);
  }
}
