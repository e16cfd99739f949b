// Change notices: what lets the gateway answer some reads from a copy (services/gateway
// readcache.ts) that is never stale, also across a crash or a lost message.
//
// A service that opts in counts the writes to its store: every write that reaches the database
// moves its sequence number once before it starts and once after it ends, and each move is
// published at once on `berth.changes.<node>.<service>` as `<boot>.<seq>` (boot: random at each
// start; a start publishes `<boot>.0` before the service serves). Its unary replies carry the
// state they were sent in (header `berth-state`: `<boot>.<seq>`), and a read's reply is marked
// cacheable (`<boot>.<seq>.c`) only when no write was under way when it started and the number
// did not move while it ran: its answer is then the store's state at `<seq>`. A write that answers
// what a read of its record would (a seed, e.g. Containers.Create for Get) is marked so when its
// own write was the only one while it ran.
//
// Notices and replies leave on the service's one connection, in the order they were made, and
// nats-server hands one connection's messages to a subscriber's connection in that order. So a
// reader that takes notices and replies on one connection sees the notice of every change that
// began before a reply ahead of that reply, and a write's reply after its notices.
//
// Per record: a notice also names the store keys it is about (`<boot>.<seq>\0<key>\0<key>...`):
// a begin its write's keys, an end those of every write begun since none was under way (an end
// does not know which write it ends). A read whose answer comes from one record alone says
// which (its handler sets `ctx.readsRecord`; the reply's `berth-record` header), and a reader
// may then keep that answer across notices about other keys. A notice with no keys (a start, a
// reconnect, a touch, a write of too many keys) is about everything, and so is any notice after
// one the reader missed (its number is not the next).
import { randomBytes } from 'node:crypto';
import type { MsgHdrs, NatsConnection } from '@nats-io/nats-core';
import type { WriteWatch } from '@berth/store';
import { headers } from './headers.js';
import { faultPoint, outboxPrefix } from './outbox.js';
import { token } from './subjects.js';

export const stateHeader = 'berth-state';
/** On a cacheable reply whose answer comes from one record alone: that record's store key. */
export const recordHeader = 'berth-record';

/** A notice about more keys than this is about everything: readers keep few copies per write. */
const maxNoticeKeys = 16;

/** Where a service's change notices go: the gateway subscribes to them, nobody else may publish there. */
export function changesSubject(node: string, service: string): string {
  return `berth.changes.${token(node)}.${service}`;
}

/** A reply's or notice's state: the boot, its sequence number, and whether the reply may be kept. */
export interface State {
  boot: string;
  seq: number;
  cacheable: boolean;
}

export function parseState(v: string | undefined): State | undefined {
  if (!v) return undefined;
  const [boot, seq, flag] = v.split('.');
  const n = Number(seq);
  if (!boot || !Number.isSafeInteger(n) || n < 0) return undefined;
  return { boot, seq: n, cacheable: flag === 'c' };
}

/** A notice's state, and the keys it is about (none: everything). */
export function parseNotice(v: string): { state?: State; keys?: string[] } {
  const cut = v.indexOf('\0');
  if (cut < 0) return { state: parseState(v) };
  return { state: parseState(v.slice(0, cut)), keys: v.slice(cut + 1).split('\0') };
}

/** Keys of every service that no read answers from: the event outbox's entries, the collector's barrier record (gc.ts). */
export const unreadKeys = (k: string): boolean => k.startsWith(outboxPrefix) || k === '~gc/barrier';

/** The service side: a store's write watch, and the state stamped on each reply. */
export class ChangeNotices implements WriteWatch {
  readonly boot = randomBytes(6).toString('hex');
  private seq = 0;
  private inflight = 0;
  /** the keys of the writes begun since none was under way; undefined: too many to name */
  private busy: Set<string> | undefined = new Set();
  private readonly subject: string;
  /**
   * The reply headers of the current state (not cacheable, cacheable), encoded once per state:
   * publish only asks headers for their bytes (as BusClient's unaryHeaders rely on), and encoding
   * them per reply cost a few µs of every reply.
   */
  private stamps: [MsgHdrs | undefined, MsgHdrs | undefined] = [undefined, undefined];

  /**
   * `ignore`: keys whose writes no read answers from (by default `unreadKeys`): they would only
   * empty the readers' copies, and a seed's write would not be known as the only one.
   */
  constructor(
    private readonly nc: NatsConnection,
    node: string,
    service: string,
    private readonly ignore: (key: string) => boolean = unreadKeys,
  ) {
    this.subject = changesSubject(node, service);
    void this.watch();
  }

  /**
   * Messages lost when this connection broke may hold notices: after a reconnect the number
   * moves once more, so whoever kept copies drops them (and replies in flight are not kept).
   */
  private async watch(): Promise<void> {
    for await (const s of this.nc.status()) if (s.type === 'reconnect') this.move();
  }

  /** Published before the service serves: readers drop what an earlier run of it told them. */
  reset(): void {
    this.publish();
  }

  begin(keys: readonly string[]): boolean {
    const read = keys.filter((k) => !this.ignore(k));
    if (!read.length) return false;
    this.inflight++;
    if (this.busy) for (const k of read) this.busy.add(k);
    if (this.busy && this.busy.size > maxNoticeKeys) this.busy = undefined;
    this.move(read.length <= maxNoticeKeys ? read : undefined);
    return true;
  }

  end(): void {
    // a crash test's point: the write is committed, its end not yet announced
    faultPoint('changes:before-end');
    this.inflight--;
    this.move(this.busy && [...this.busy]);
    if (this.inflight === 0) this.busy = new Set();
  }

  /** What reads answer from changed outside the store (the tasks service hears of a container's delete). */
  touch(): void {
    this.move();
  }

  /** The next state, announced as about `keys` (none: about everything). */
  private move(keys?: readonly string[]): void {
    this.seq++;
    this.stamps = [undefined, undefined];
    this.publish(keys);
  }

  private publish(keys?: readonly string[]): void {
    try {
      this.nc.publish(this.subject, keys?.length ? `${this.boot}.${this.seq}\0${keys.join('\0')}` : `${this.boot}.${this.seq}`);
    } catch {
      // a closed connection: the reply this write would precede cannot leave either
    }
  }

  /**
   * Where a call starts: the state a read's answer may be kept at (or a seed's write counted
   * from, stampWrite), or -1 when a write is under way.
   */
  readStart(): number {
    return this.inflight === 0 ? this.seq : -1;
  }

  /**
   * A write's reply headers: cacheable (as the answer of the read it stands for) when the number
   * moved exactly twice since `start` and nothing is under way, i.e. the one write meanwhile was
   * the caller's own (its begin and its end), so its answer is the store's state now.
   */
  stampWrite(start: number, record?: string): MsgHdrs {
    return this.stamp(start >= 0 && this.inflight === 0 && this.seq === start + 2 ? this.seq : -1, record);
  }

  /** The reply's state now: cacheable when it is `start`'s. */
  state(start = -1): string {
    return `${this.boot}.${this.seq}${start === this.seq ? '.c' : ''}`;
  }

  /** The reply's headers, carrying `state(start)`, and the one `record` a cacheable answer came from. */
  stamp(start = -1, record?: string): MsgHdrs {
    const i = start === this.seq ? 1 : 0;
    if (i === 1 && record) {
      const h = headers();
      h.set(stateHeader, this.state(start));
      h.set(recordHeader, record);
      return h;
    }
    let h = this.stamps[i];
    if (!h) {
      const real = headers();
      real.set(stateHeader, this.state(start));
      const bytes = (real as unknown as { encode(): Uint8Array }).encode();
      h = this.stamps[i] = { encode: () => bytes } as unknown as MsgHdrs;
    }
    return h;
  }
}
