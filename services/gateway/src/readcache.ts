// Answers to some reads kept in the gateway, so a client's repeated reads (ctr run asks
// Content.Info eight times, Namespaces.Get twice) cost no bus round trip. Never stale: a kept
// answer is dropped as soon as the service may have changed anything, and an answer is kept only
// when it is known to be the service's current state (the protocol: @berth/bus changes.ts).
//
// Per service: `known` is the service's state (`<boot>.<seq>`) as of the last notice or reply
// received. Notices and replies are taken here in the order they arrived, on one connection
// (the reply's onReply hook and the notice subscription both run synchronously in nats.js's
// read loop), so:
// - a notice empties the service's copies and becomes `known`; one that names keys and follows
//   the known state directly empties only the copies of those records, and those that came
//   from more than one record (a reply without `berth-record`);
// - a reply whose state is not `known` says a notice was missed (or none was seen yet): the copies
//   go, and its state becomes `known` when it can only be newer (same boot and a later number, or
//   nothing known); another boot with something known forgets `known` (a late reply of a process
//   that died must not vouch for its successor);
// - a reply marked cacheable whose state is `known` is kept, unless the copies were emptied
//   between its arrival and the moment it is stored.
// When the gateway's own connection drops, messages may have been lost: everything goes and
// `known` is forgotten until the next notice or reply.
import type { Msg, NatsConnection, Subscription } from '@nats-io/nats-core';
import { BerthError, type Code } from '@berth/errdefs';
import type { Seed } from './seeds.js';
import { changesSubject, parseNotice, parseState, recordHeader, stateHeader, token, type CallContext, type OnCancel } from '@berth/bus';

/**
 * `$SRV.CACHE.berth-gateway.<node>`: the cache's counters as JSON (for tests and debugging). In
 * the gateway's micro service space: only the gateway's own NATS user may ask.
 */
export const cacheStatsSubject = (node: string) => `$SRV.CACHE.berth-gateway.${token(node)}`;

export interface ReadCacheOptions {
  /** entries kept at most, over all services */
  maxEntries: number;
  /** bytes of keys and answers kept at most, over all services */
  maxBytes: number;
}

export const defaultReadCacheOptions: ReadCacheOptions = { maxEntries: 4096, maxBytes: 8 << 20 };

export interface ReadCacheStats {
  hits: number;
  misses: number;
  /** answers stored */
  kept: number;
  /** times copies of a service were dropped (notices, missed notices, reconnects) */
  cleared: number;
  /** answers of writes kept as a read's (seeds.ts) */
  seeded: number;
  /** answers handed to a forwarded call that takes them along (carry.ts) */
  lent: number;
  entries: number;
  bytes: number;
}

/**
 * A read's kept answer that is an error (a task seen deleted: Get is NotFound). Its `length`
 * counts toward the cache's bytes as an answer's does.
 */
export class Refusal {
  constructor(
    readonly code: Code,
    readonly message: string,
  ) {}

  get length(): number {
    return this.message.length;
  }
}

type Kept = Uint8Array | Refusal;

class ServiceCopies {
  known?: { boot: string; seq: number };
  /** moves each time copies are emptied: an answer is stored only when it has not moved since the answer arrived */
  generation = 0;
  readonly entries = new Map<string, Kept>();
  /** the record each copy came from, by copy key; a copy not in here came from several */
  readonly recordOf = new Map<string, string>();
  /** the copies of each record */
  readonly byRecord = new Map<string, Set<string>>();
  /** the methods whose replies the service has marked cacheable: only their calls look at the copies */
  readonly readable = new Set<string>();

  constructor(readonly name: string) {}

  /** Forgets copy `key`'s record (the copy itself is the caller's to remove). */
  unindex(key: string): void {
    const r = this.recordOf.get(key);
    if (r === undefined) return;
    this.recordOf.delete(key);
    const set = this.byRecord.get(r)!;
    set.delete(key);
    if (!set.size) this.byRecord.delete(r);
  }

  index(key: string, record: string): void {
    this.recordOf.set(key, record);
    let set = this.byRecord.get(record);
    if (!set) this.byRecord.set(record, (set = new Set()));
    set.add(key);
  }
}

type Forward = (body: Buffer, ctx: CallContext, onCancel: OnCancel, onReply?: (msg: Msg) => void) => Promise<Uint8Array>;

/** The method, the namespace and the request's bytes: everything such a read's answer depends on. */
const keyOf = (path: string, ctx: CallContext, body: Buffer) => `${path}\0${ctx.namespace ?? ''}\0${body.toString('latin1')}`;

/** The one record a reply's answer came from, when it says so. */
const recordOf = (msg: Msg): string | undefined => msg.headers?.get(recordHeader) || undefined;

/** The seed's read request, or none: the write succeeded, so nothing here may fail its answer. */
function requestOf(seed: Seed, write: Buffer): Uint8Array | undefined {
  try {
    return seed.request(write);
  } catch {
    return undefined;
  }
}

export class ReadCache {
  private readonly services = new Map<string, ServiceCopies>();
  private readonly subs: Subscription[] = [];
  private bytes = 0;
  private entries = 0;
  /**
   * Whether the notice subscription is known to be in place (nats-server has answered a flush
   * after it without refusing it): without notices nothing may be kept, or a write this gateway
   * did not forward (a service's own, the collector's) would go unseen.
   */
  private listening = false;
  private deaf = false;
  readonly stats: Omit<ReadCacheStats, 'entries' | 'bytes'> = { hits: 0, misses: 0, kept: 0, cleared: 0, seeded: 0, lent: 0 };

  constructor(
    private readonly nc: NatsConnection,
    node: string,
    private readonly opts: ReadCacheOptions = defaultReadCacheOptions,
  ) {
    // a callback subscription: notices are handled in arrival order with the replies
    this.subs.push(
      nc.subscribe(changesSubject(node, '*'), {
        callback: (err, msg) => {
          if (err) {
            // refused (permissions) or closed: never keep anything again
            this.deaf = true;
            this.listening = false;
            return this.forgetAll();
          }
          const s = this.service(msg.subject.slice(msg.subject.lastIndexOf('.') + 1));
          const { state: st, keys } = parseNotice(msg.string());
          const k = s.known;
          if (keys && st && k && k.boot === st.boot && st.seq === k.seq + 1) this.clearRecords(s, keys);
          else this.clear(s);
          s.known = st ? { boot: st.boot, seq: st.seq } : undefined;
        },
      }),
    );
    this.subs.push(nc.subscribe(cacheStatsSubject(node), { callback: (err, msg) => void (err || msg.respond(JSON.stringify(this.snapshot()))) }));
    void this.watch();
    nc.flush().then(
      () => void (this.listening = !this.deaf),
      () => undefined,
    );
  }

  private async watch(): Promise<void> {
    for await (const s of this.nc.status()) if (s.type === 'disconnect' || s.type === 'reconnect') this.forgetAll();
    this.forgetAll();
  }

  private service(name: string): ServiceCopies {
    let s = this.services.get(name);
    if (!s) this.services.set(name, (s = new ServiceCopies(name)));
    return s;
  }

  private forgetAll(): void {
    for (const s of this.services.values()) {
      this.clear(s);
      s.known = undefined;
    }
  }

  private clear(s: ServiceCopies): void {
    s.generation++;
    if (s.entries.size === 0) return;
    this.stats.cleared++;
    for (const [k, v] of s.entries) this.bytes -= k.length + v.length;
    this.entries -= s.entries.size;
    s.entries.clear();
    s.recordOf.clear();
    s.byRecord.clear();
  }

  /** A notice about `records`: their copies go, and those that came from several records. */
  private clearRecords(s: ServiceCopies, records: readonly string[]): void {
    // no copy names its record (every service but those whose reads do): all of them go
    if (s.recordOf.size === 0) return this.clear(s);
    s.generation++;
    const had = s.entries.size;
    if (s.recordOf.size < s.entries.size) {
      for (const key of [...s.entries.keys()]) if (!s.recordOf.has(key)) this.drop(s, key);
    }
    for (const r of records) for (const key of [...(s.byRecord.get(r) ?? [])]) this.drop(s, key);
    if (s.entries.size < had) this.stats.cleared++;
  }

  private drop(s: ServiceCopies, key: string): void {
    const v = s.entries.get(key);
    if (v === undefined) return;
    s.entries.delete(key);
    s.unindex(key);
    this.bytes -= key.length + v.length;
    this.entries--;
  }

  snapshot(): ReadCacheStats {
    return { ...this.stats, entries: this.entries, bytes: this.bytes };
  }

  /**
   * A reply of the service arrived: checks its state against what is known. Returns the
   * generation the answer may be stored under, or -1.
   */
  private observe(s: ServiceCopies, msg: Msg): number {
    const st = parseState(msg.headers?.get(stateHeader));
    if (!st || !this.listening) return -1; // a service that does not stamp its replies: nothing is kept for it
    const k = s.known;
    if (!k || k.boot !== st.boot || k.seq !== st.seq) {
      this.clear(s);
      s.known = !k || (k.boot === st.boot && st.seq > k.seq) ? { boot: st.boot, seq: st.seq } : undefined;
      if (!s.known) return -1;
    }
    return st.cacheable ? s.generation : -1;
  }

  private store(s: ServiceCopies, key: string, answer: Kept, record: string | undefined): void {
    const size = key.length + answer.length;
    if (size > this.opts.maxBytes / 8) return; // one large answer must not push out everything else
    // two misses of one read at once: the later answer replaces the earlier
    this.drop(s, key);
    s.entries.set(key, answer);
    if (record !== undefined) s.index(key, record);
    this.bytes += size;
    this.entries++;
    this.stats.kept++;
    // the oldest go first (a Map iterates in insertion order; a hit re-inserts its entry)
    while (this.entries > this.opts.maxEntries || this.bytes > this.opts.maxBytes) {
      // the service that took this entry gives up its oldest first, then the others
      const victim = s.entries.size > 1 ? s : [...this.services.values()].find((c) => c !== s && c.entries.size > 0);
      if (!victim) break;
      this.drop(victim, victim.entries.keys().next().value as string);
    }
  }

  /**
   * The route of one forwarded unary method of `service`: every reply is observed (a write's
   * reply can show a missed notice). Which methods' answers may be kept is the service's to say
   * (it marks their replies), so the copies are looked at only once the method has had one. A
   * write with a `seed` keeps its marked answer as the answer of the seed's read.
   */
  route(service: string, path: string, forward: Forward, seed?: Seed): (body: Buffer, ctx: CallContext, onCancel: OnCancel) => Promise<Uint8Array> {
    const s = this.service(service);
    return (body, ctx, onCancel) => {
      if (!seed && s.readable.has(path)) return this.cached(s, path, forward, body, ctx, onCancel);
      let at = -1;
      let record: string | undefined;
      return forward(body, ctx, onCancel, (msg) => {
        at = this.observe(s, msg);
        record = recordOf(msg);
      }).then((answer) => {
        if (at < 0) return answer;
        if (seed) {
          const req = at === s.generation ? requestOf(seed, body) : undefined;
          if (req) {
            this.stats.seeded++;
            s.readable.add(seed.read);
            const refused = seed.refusal?.(req);
            this.store(s, keyOf(seed.read, ctx, Buffer.from(req.buffer, req.byteOffset, req.byteLength)), refused ? new Refusal(refused.code, refused.message) : answer, record);
          }
          return answer;
        }
        s.readable.add(path);
        this.stats.misses++;
        if (at === s.generation) this.store(s, keyOf(path, ctx, body), answer, record);
        return answer;
      });
    };
  }

  /**
   * The answer held for a read, asking nobody (undefined: none held). A held answer is as current
   * as a hit: a change clears it before that change's answer reaches this gateway.
   */
  peek(service: string, path: string, ctx: CallContext, request: Uint8Array): Uint8Array | undefined {
    const s = this.services.get(service);
    if (!s || !this.listening) return undefined;
    const hit = s.entries.get(keyOf(path, ctx, Buffer.from(request.buffer, request.byteOffset, request.byteLength)));
    if (!(hit instanceof Uint8Array)) return undefined;
    this.stats.lent++;
    return hit;
  }

  private async cached(s: ServiceCopies, path: string, forward: Forward, body: Buffer, ctx: CallContext, onCancel: OnCancel): Promise<Uint8Array> {
    const key = keyOf(path, ctx, body);
    const hit = s.entries.get(key);
    if (hit) {
      this.stats.hits++;
      s.entries.delete(key);
      s.entries.set(key, hit);
      if (hit instanceof Refusal) throw new BerthError(hit.code, hit.message);
      return hit;
    }
    this.stats.misses++;
    let at = -1;
    let record: string | undefined;
    const answer = await forward(body, ctx, onCancel, (msg) => {
      at = this.observe(s, msg);
      record = recordOf(msg);
    });
    if (at >= 0 && at === s.generation) this.store(s, key, answer, record);
    return answer;
  }

  close(): void {
    for (const sub of this.subs) sub.unsubscribe();
    this.forgetAll();
  }
}
