// Events to the tasks service, as a stock shim forwards them (ttrpc Events/Forward to
// TTRPC_ADDRESS, namespace in `containerd-namespace-ttrpc`), except that none is ever dropped:
// each is appended to its container's spool log before it is sent, sent in order per container,
// retried until the endpoint acknowledges it, and only then marked delivered in the log. A
// restarted host sends what the logs hold undelivered (the tasks service drops a second copy of
// an event it committed, should a mark not have made it to the log).
import { eventTypes } from '@berth/bus/topics';
import { closeSync, constants as C, ftruncateSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { codec, nowTimestamp, toAny, type Any, type Timestamp } from '@berth/api';
import { TtrpcClient } from '@berth/ttrpc';

const SERVICE = 'containerd.services.events.ttrpc.v1.Events';
const forwardRequest = codec('containerd.services.events.ttrpc.v1.ForwardRequest');

/** Topic to the event's message type: containerd's table, the one every Berth service uses. */
export const topicTypes: Record<string, string> = eventTypes;

/**
 * A spool log is a run of records, each one write() (whole or absent when the host dies), so a
 * container's events cost appends to one file rather than a file each: new inodes on ext4 were
 * a sixth of the host's CPU per run. A record: u32 length of what follows, a kind, its body.
 */
const ADDRESS = 0x41; // body: the endpoint's address
const EVENT = 0x45; // body: u16 namespace length, namespace, the encoded ForwardRequest
const DELIVERED = 0x44; // no body: the oldest undelivered event was acknowledged
/** a log larger than this is emptied once everything in it is delivered */
const compactAt = 64 << 10;

interface Pending {
  namespace: string;
  request: Uint8Array;
  /** the endpoint acknowledged it (marked in the log once everything before it is too) */
  acked?: boolean;
}

/**
 * Events of one container in flight at once. The tasks service commits a connection's forwards
 * in the order they arrive and answers in that order, so an exit need not wait for the round
 * trip of the start before it (a `docker run` of a short command waits on that exit).
 */
const window = 16;

/** One container's ordered queue and its spool log. */
class Queue {
  /** undelivered, oldest first: items[0, sent) are in flight */
  readonly items: Pending[] = [];
  sent = 0;
  /** a send is scheduled for after this turn (kickSoon) */
  soon = false;
  /** waiting out a failure: nothing is sent until the retry */
  waiting = false;
  /** moves at each failure: the answers of sends before it are not heeded */
  round = 0;
  backoff = 0;
  /** drop the spool log once empty (the container is gone) */
  retire = false;
  fd: number | null = null;
  size = 0;
  /** the address is in the log (an emptied log holds none) */
  addressed = false;

  constructor(
    readonly file: string,
    public address: string,
  ) {}
}

function record(kind: number, ...parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length + 1);
  head[4] = kind;
  return Buffer.concat([head, body]);
}

function eventRecord(namespace: string, request: Uint8Array): Buffer {
  const ns = Buffer.from(namespace);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(ns.length);
  return record(EVENT, len, ns, request);
}

/** What a log holds undelivered, and its last address; a torn last record (a crash of the machine) ends it. */
function readLog(data: Buffer): { address: string; items: Pending[] } {
  let address = '';
  const events: Pending[] = [];
  let delivered = 0;
  for (let at = 0; at + 5 <= data.length; ) {
    const len = data.readUInt32BE(at);
    if (len < 1 || at + 4 + len > data.length) break;
    const body = data.subarray(at + 5, at + 4 + len);
    const kind = data[at + 4];
    if (kind === ADDRESS) address = body.toString();
    else if (kind === EVENT) {
      const nsLen = body.readUInt16BE(0);
      events.push({ namespace: body.subarray(2, 2 + nsLen).toString(), request: Buffer.from(body.subarray(2 + nsLen)) });
    } else if (kind === DELIVERED) delivered++;
    at += 4 + len;
  }
  return { address, items: events.slice(delivered) };
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

  /** Sends what the spool left by an earlier host holds. */
  resumeAll(): void {
    for (const name of readdirSync(this.spool)) {
      try {
        if (name.endsWith('.log')) this.resumeLog(name.slice(0, -'.log'.length));
        else if (name.endsWith('.tmp')) rmSync(join(this.spool, name), { force: true }); // a resume cut short: its log is still there
        else this.resumeFolder(name);
      } catch (e) {
        this.log(`spool ${name}: ${(e as Error).message}`);
      }
    }
  }

  /** A container's log: what it holds undelivered is written to a fresh log (its tail may be torn) and sent. */
  private resumeLog(key: string): void {
    const file = join(this.spool, `${key}.log`);
    const { address, items } = readLog(readFileSync(file));
    if (!items.length || !address) {
      unlinkSync(file);
      return;
    }
    const fresh = Buffer.concat([record(ADDRESS, Buffer.from(address)), ...items.map((i) => eventRecord(i.namespace, i.request))]);
    writeFileSync(`${file}.tmp`, fresh);
    renameSync(`${file}.tmp`, file);
    const q = new Queue(file, address);
    q.addressed = true;
    q.size = fresh.length;
    q.items.push(...items);
    this.queues.set(key, q);
    this.kick(q);
  }

  /** The spool folder of a host before spool logs (a file per event, and an `address` file): sent through a log. */
  private resumeFolder(key: string): void {
    const dir = join(this.spool, key);
    if (!statSync(dir).isDirectory()) return;
    const address = readFileSync(join(dir, 'address'), 'utf8');
    for (const name of readdirSync(dir).filter((n) => /^\d+$/.test(n)).sort()) {
      const data = readFileSync(join(dir, name));
      const nsLen = data.readUInt16BE(0);
      this.enqueue(key, address, data.subarray(2, 2 + nsLen).toString(), Buffer.from(data.subarray(2 + nsLen)));
    }
    rmSync(dir, { recursive: true, force: true });
  }

  private queue(key: string, address: string): Queue {
    let q = this.queues.get(key);
    if (!q) {
      q = new Queue(join(this.spool, `${key}.log`), address);
      this.queues.set(key, q);
    }
    if (q.address !== address) {
      q.address = address;
      q.addressed = false;
    }
    return q;
  }

  private append(q: Queue, rec: Buffer): void {
    q.fd ??= openSync(q.file, C.O_WRONLY | C.O_APPEND | C.O_CREAT, 0o600);
    writeSync(q.fd, rec);
    q.size += rec.length;
  }

  /** Persists and queues one event; resolves nothing: delivery is the forwarder's from here. */
  publish(key: string, address: string, namespace: string, topic: string, event: Record<string, unknown>, timestamp: Timestamp = nowTimestamp()): void {
    const type = topicTypes[topic];
    if (!type) throw new Error(`unknown topic ${topic}`);
    const any: Any = toAny(type, event);
    this.enqueue(key, address, namespace, forwardRequest.encode({ envelope: { timestamp, namespace, topic, event: any } }));
  }

  private enqueue(key: string, address: string, namespace: string, request: Uint8Array): void {
    const q = this.queue(key, address);
    const rec = eventRecord(namespace, request);
    // one write: the address rides with the event that needs it
    this.append(q, q.addressed ? rec : Buffer.concat([record(ADDRESS, Buffer.from(address)), rec]));
    q.addressed = true;
    q.items.push({ namespace, request });
    this.kickSoon(q);
  }

  /**
   * Sends after this turn: an event is published by the call that made it, and that call's answer
   * (which its caller waits for: Create, Start, Delete) goes out first; otherwise the tasks
   * service would read and commit the event before it read the answer.
   */
  private kickSoon(q: Queue): void {
    if (q.soon || this.closed) return;
    q.soon = true;
    setImmediate(() => {
      q.soon = false;
      this.kick(q);
    });
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

  /** Sends what is not in flight yet, in order, up to the window. */
  private kick(q: Queue): void {
    if (q.waiting || this.closed) return;
    if (!q.items.length) {
      if (q.retire) this.drop(q);
      return;
    }
    while (q.sent < q.items.length && q.sent < window) void this.send(q, q.items[q.sent++]!);
  }

  private drop(q: Queue): void {
    for (const [k, v] of this.queues) if (v === q) this.queues.delete(k);
    this.closeLog(q);
    rmSync(q.file, { force: true });
  }

  private closeLog(q: Queue): void {
    if (q.fd === null) return;
    try {
      closeSync(q.fd);
    } catch {}
    q.fd = null;
  }

  /** An event was acknowledged: marked in the log; a large log is emptied once nothing in it waits. */
  private delivered(q: Queue): void {
    try {
      if (!q.items.length && q.size > compactAt && q.fd !== null) {
        ftruncateSync(q.fd, 0);
        q.size = 0;
        q.addressed = false;
      } else this.append(q, record(DELIVERED));
    } catch (e) {
      // sent twice at worst, after a restart: the tasks service drops the copy
      this.log(`spool ${q.file}: ${(e as Error).message}`);
    }
  }

  private async send(q: Queue, item: Pending): Promise<void> {
    const round = q.round;
    try {
      const client = await this.client(q.address);
      await client.call(SERVICE, 'Forward', item.request, { timeoutMs: this.timeout, metadata: { 'containerd-namespace-ttrpc': item.namespace } });
    } catch (e) {
      if (round !== q.round || this.closed) return; // the retry after an earlier failure sends it again
      q.round++;
      this.log(`forward to ${q.address} failed (will retry): ${(e as Error).message}`);
      this.dropClient(q.address);
      // everything not marked delivered goes again, in order (the tasks service drops a copy it committed)
      q.sent = 0;
      for (const i of q.items) i.acked = false;
      q.waiting = true;
      q.backoff = Math.min(this.maxDelay, q.backoff ? q.backoff * 2 : this.minDelay);
      setTimeout(() => {
        q.waiting = false;
        this.kick(q);
      }, q.backoff).unref();
      return;
    }
    if (round !== q.round) return;
    item.acked = true;
    q.backoff = 0;
    while (q.items[0]?.acked) {
      q.items.shift();
      q.sent--;
      // a retired container's log goes whole once it is empty: no mark needed
      if (!(q.retire && !q.items.length)) this.delivered(q);
    }
    this.kick(q);
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
    for (const q of this.queues.values()) this.closeLog(q);
  }
}
