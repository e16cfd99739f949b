// One end of a flow-controlled message stream over NATS. Both ends own an inbox; every frame
// goes to the peer's inbox, so order holds. Data frames carry no headers: data frame n (from 1)
// goes to `<peer inbox>.<n>`, so a lost, repeated or injected frame shows as a break in the
// count before anything after it is delivered. Control frames go to the bare inbox:
//   credit c   the peer may send data frames up to number c (a running total, so a lost credit
//              frame is made good by the next one; credit-based flow control: a sender never
//              has more than the receiver's window in flight, so memory stays bounded)
//   end n      half-close after n data frames; the server's end carries the final status
//   cancel     abort, from either side, with a status
//   ping n c   liveness while nothing else is sent; it carries the sender's data count and
//              credit total too, so a frame lost on the way is noticed and a lost credit made
//              good while both ends wait. A peer silent for 3 beats is gone.
// A peer that announced `berth-batch: 1` in the handshake also takes batches: the small messages
// one event-loop turn sends go out as one frame to `<peer inbox>.<n>.<k>`, messages n to n+k-1,
// each a 4-byte big-endian length and its bytes. Counts, credit and checks stay per message; a
// batch only saves nats-server and both ends a message each (an events subscriber fed 32 events
// at once was 32 frames, 32 socket writes and 32 reads).
// NATS core is at-most-once: when the connection drops the mux fails every channel at once.
import type { Msg, MsgHdrs, NatsConnection } from '@nats-io/nats-core';
import { streamMux } from './mux.js';
import { BerthError, Code, toBerthError } from '@berth/errdefs';
import { H, headers } from './headers.js';
import { errorFrom, errorHeaders, tooLarge } from './status.js';
import { streamed } from './collect.js';
import { TimerTicks } from './stall.js';

export interface ChannelOptions {
  /** how many data frames we accept before granting more */
  window: number;
  /** ms between liveness pings; the peer is declared gone after 3 silent beats */
  heartbeat: number;
  /** what this stream is, for error messages */
  what: string;
}

export const defaultChannelOptions: ChannelOptions = { window: 16, heartbeat: 2000, what: 'stream' };

/** What a peer may ask for: beats faster than this would flood, slower would hide a dead peer. */
export const livenessBounds = { min: 100, max: 10_000 } as const;
/** The largest window a peer may announce: it bounds what we have in flight towards it. */
export const maxWindow = 1024;

/** A liveness interval within bounds, or `fallback` when the value is missing or not a number. */
export function clampLiveness(ms: unknown, fallback?: number): number | undefined {
  const n = Number(ms);
  if (ms === undefined || ms === null || ms === '' || !Number.isFinite(n) || n <= 0) return fallback;
  return Math.min(livenessBounds.max, Math.max(livenessBounds.min, Math.round(n)));
}

/** messages up to this size wait for the turn's batch; larger ones go at once, alone */
const batchable = 16 << 10;
/** a batch goes out once it would grow beyond this */
const maxBatchBytes = 64 << 10;

/** What a handshake header announces: the peer takes batched data frames. */
export function takesBatches(v: unknown): boolean {
  return v === '1';
}

function clampWindow(n: unknown): number {
  const w = Math.floor(Number(n));
  return Number.isFinite(w) && w >= 1 ? Math.min(w, maxWindow) : 1;
}

/** The reason a stream that ended cleanly gives to whatever still waits on it (one shared value: made per stream, it was a measurable cost). */
const streamClosed = new BerthError(Code.Canceled, 'stream closed');

type Waiter = { resolve: () => void; reject: (e: BerthError) => void };

export class Channel implements AsyncIterable<Uint8Array> {
  private peer?: string;
  private peerWindow = 0;
  /** data frames sent, and the peer's credit total (we may send up to that many) */
  private sent = 0;
  private granted = 0;
  /** the peer takes batches; the messages of this turn not yet published, from number batchFirst */
  private peerBatches = false;
  private batch: Uint8Array[] = [];
  private batchBytes = 0;
  private batchFirst = 0;
  private flushQueued = false;
  /** credit not yet taken by a send() (granted minus sent minus sends about to publish) */
  private credit = 0;
  private creditWaiters: Waiter[] = [];
  private queue: Uint8Array[] = [];
  private reader?: Waiter;
  /** data frames received, taken by recv(), and the credit total we granted the peer */
  private received = 0;
  private consumed = 0;
  private grantedToPeer = 0;
  /** the peer half-closed (ok) or the stream failed (error) */
  private remoteDone = false;
  private failure?: BerthError;
  private localEnded = false;
  private closed = false;
  private lastHeard = Date.now();
  private lastSent = Date.now();
  /** ms between our pings: our heartbeat or the peer's, whichever is shorter */
  private pingEvery = 0;
  private timer?: NodeJS.Timeout;
  private ticks?: TimerTicks;
  readonly inbox: string;
  readonly opts: ChannelOptions;
  /** called once when the stream is over on both sides, or failed */
  onClose?: (err?: BerthError) => void;
  private readonly aborter = new AbortController();
  /** aborted when the stream closes, for work that waits on something other than send/recv */
  readonly signal: AbortSignal = this.aborter.signal;

  /**
   * `client`: the end that opened the stream. The server's `end` frame is final (it carries the
   * call's status), so a client whose peer ended has nothing left to send either.
   */
  constructor(private readonly nc: NatsConnection, opts: Partial<ChannelOptions> = {}, readonly client = false) {
    const o = { ...defaultChannelOptions, ...opts };
    this.opts = { ...o, window: clampWindow(o.window), heartbeat: clampLiveness(o.heartbeat, defaultChannelOptions.heartbeat)! };
    this.grantedToPeer = this.opts.window;
    this.inbox = streamMux(nc).register((err, msg) => (err ? this.fail(this.lost(err)) : this.onFrame(msg)));
  }

  private lost(err: Error): BerthError {
    const e = toBerthError(err);
    return new BerthError(e.code, `${this.opts.what}: ${e.message}`);
  }

  /**
   * Once the peer is known (after the handshake): where to send, how much it accepts and how
   * often it wants to hear from us (both bounded: they come from the other side).
   */
  connect(peer: string, peerWindow: unknown, peerHeartbeat?: unknown, peerBatches?: unknown): void {
    this.peer = peer;
    this.peerBatches = takesBatches(peerBatches);
    this.peerWindow = clampWindow(peerWindow);
    this.granted = this.peerWindow;
    this.addCredit(this.peerWindow);
    this.pingEvery = Math.min(this.opts.heartbeat, clampLiveness(peerHeartbeat, this.opts.heartbeat)!);
    // ticks at half the ping interval: a ping is never later than one interval
    this.ticks = new TimerTicks(this.pingEvery >> 1);
    this.timer = setInterval(() => this.beat(), this.pingEvery >> 1);
    this.timer.unref();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private onFrame(msg: Msg): void {
    this.lastHeard = Date.now();
    if (msg.subject.length > this.inbox.length) {
      const tail = msg.subject.slice(this.inbox.length + 1);
      const dot = tail.indexOf('.');
      if (dot < 0) return this.onData(Number(tail), msg.data);
      return this.onBatch(Number(tail.slice(0, dot)), Number(tail.slice(dot + 1)), msg.data);
    }
    const h = msg.headers;
    switch (h?.get(H.ctl)) {
      case 'credit':
        return this.onCredit(h!.get(H.credit));
      case 'ping':
        if (!this.checkCount(h!.get(H.n), 'ping')) return;
        return this.onCredit(h!.get(H.credit));
      case 'end': {
        const err = errorFrom(msg);
        if (err) return this.fail(err, false);
        if (!this.checkCount(h!.get(H.n), 'end', true)) return;
        this.remoteDone = true;
        if (this.client) {
          // the server's end is final: nothing more to hear from it or to tell it
          this.localEnded = true;
          clearInterval(this.timer);
        }
        this.wakeReader();
        return this.maybeClose();
      }
      case 'cancel':
        return this.fail(errorFrom(msg) ?? new BerthError(Code.Canceled, 'context canceled'), false);
      default:
        return this.fail(new BerthError(Code.Internal, `${this.opts.what}: malformed frame`));
    }
  }

  private onData(seq: number, data: Uint8Array): void {
    if (this.remoteDone || this.closed) return;
    if (seq !== this.received + 1) {
      // frames come in order on one connection: a break means one was lost (or forged)
      return this.fail(new BerthError(Code.Unavailable, `${this.opts.what}: data frame ${this.received + 1} lost (got ${seq})`));
    }
    if (seq > this.grantedToPeer) {
      return this.fail(new BerthError(Code.ResourceExhausted, `${this.opts.what}: peer sent more than the window it was granted (${this.opts.window} frames)`));
    }
    this.received = seq;
    streamed(data.length);
    this.queue.push(data);
    this.wakeReader();
  }

  /** A batch: messages seq to seq+k-1, each a 4-byte length and its bytes, checked whole before any is delivered. */
  private onBatch(seq: number, k: number, data: Uint8Array): void {
    if (this.remoteDone || this.closed) return;
    if (!Number.isInteger(k) || k < 2) return this.fail(new BerthError(Code.Internal, `${this.opts.what}: malformed batch`));
    if (seq !== this.received + 1) {
      return this.fail(new BerthError(Code.Unavailable, `${this.opts.what}: data frame ${this.received + 1} lost (got ${seq})`));
    }
    if (seq + k - 1 > this.grantedToPeer) {
      return this.fail(new BerthError(Code.ResourceExhausted, `${this.opts.what}: peer sent more than the window it was granted (${this.opts.window} frames)`));
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const parts: Uint8Array[] = [];
    let at = 0;
    while (at + 4 <= data.length && parts.length < k) {
      const len = view.getUint32(at);
      if (at + 4 + len > data.length) break;
      parts.push(data.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    if (parts.length !== k || at !== data.length) return this.fail(new BerthError(Code.Internal, `${this.opts.what}: malformed batch`));
    this.received = seq + k - 1;
    for (const p of parts) {
      streamed(p.length);
      this.queue.push(p);
    }
    this.wakeReader();
  }

  /**
   * The peer's count of data frames it sent, as a ping or an end states it. Frames arrive in
   * order, so by then all of them must have arrived; fewer means some were lost.
   */
  private checkCount(v: string | undefined, frame: string, exact = false): boolean {
    const n = Number(v);
    if (v === undefined || v === '' || !Number.isInteger(n) || n < 0 || n > this.grantedToPeer) {
      this.fail(new BerthError(Code.Internal, `${this.opts.what}: malformed ${frame} frame`));
      return false;
    }
    if (n > this.received || (exact && n !== this.received)) {
      this.fail(new BerthError(Code.Unavailable, `${this.opts.what}: peer sent ${n} data frames, ${this.received} arrived`));
      return false;
    }
    return true;
  }

  private onCredit(v: string | undefined): void {
    if (!this.peer) return; // before the handshake completed: connect() sets the credit
    const c = Number(v);
    if (!Number.isInteger(c) || c < 0) return this.fail(new BerthError(Code.Internal, `${this.opts.what}: malformed credit`));
    // the receiver grants what it consumed plus its window, and it cannot have consumed more than we sent
    if (c > this.sent + this.peerWindow) return this.fail(new BerthError(Code.Internal, `${this.opts.what}: peer granted credit beyond its window`));
    if (c > this.granted) {
      this.addCredit(c - this.granted);
      this.granted = c;
    }
  }

  private addCredit(n: number): void {
    this.credit += n;
    while (this.credit > 0 && this.creditWaiters.length) {
      this.credit--;
      this.creditWaiters.shift()!.resolve();
    }
  }

  private wakeReader(): void {
    const r = this.reader;
    if (r && (this.queue.length || this.remoteDone || this.failure)) {
      this.reader = undefined;
      if (this.failure && !this.queue.length) r.reject(this.failure);
      else r.resolve();
    }
  }

  private frame(ctl: string, hdrs: MsgHdrs = headers()): void {
    if (!this.peer || this.nc.isClosed()) return;
    // a control frame counts the data before it (ping, end): that data goes first. A cancel
    // ends the stream, and what waited for the batch is moot
    if (ctl === 'cancel') this.dropBatch();
    else this.flushBatch();
    hdrs.set(H.ctl, ctl);
    try {
      this.nc.publish(this.peer, new Uint8Array(), { headers: hdrs });
    } catch {
      return; // the connection is closing: the peer learns from our silence
    }
    this.lastSent = Date.now();
  }

  private beat(): void {
    const now = Date.now();
    this.lastHeard += this.ticks?.stalled(now) ?? 0; // (stall.ts) our own stall is not the peer's silence
    if (now - this.lastHeard > 3 * this.opts.heartbeat) {
      this.fail(new BerthError(Code.Unavailable, `${this.opts.what}: peer went away`));
      return;
    }
    if (now - this.lastSent >= this.pingEvery >> 1) {
      const h = headers();
      h.set(H.n, String(this.sent));
      h.set(H.credit, String(this.grantedToPeer));
      this.frame('ping', h);
    }
  }

  /** Sends one message; resolves once the peer had room for it. */
  async send(data: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.localEnded) throw new BerthError(Code.FailedPrecondition, `${this.opts.what}: send after end`);
    const max = this.nc.info?.max_payload;
    if (max !== undefined && data.length > max) throw tooLarge(this.opts.what, data.length, max);
    if (this.credit > 0) this.credit--;
    else await new Promise<void>((resolve, reject) => this.creditWaiters.push({ resolve, reject }));
    if (this.failure) throw this.failure;
    if (!this.peer || this.nc.isClosed()) throw new BerthError(Code.Unavailable, `${this.opts.what}: connection to NATS closed`);
    const n = ++this.sent;
    streamed(data.length);
    if (this.peerBatches && data.length <= batchable) {
      if (this.batchBytes + 4 + data.length > maxBatchBytes) this.flushBatch();
      if (!this.batch.length) this.batchFirst = n;
      this.batch.push(data);
      this.batchBytes += 4 + data.length;
      if (!this.flushQueued) {
        this.flushQueued = true;
        setImmediate(this.flushTurn);
      }
      return;
    }
    this.flushBatch();
    // data frames carry no headers: the hot path of every stream
    this.nc.publish(`${this.peer}.${n}`, data);
    this.lastSent = Date.now();
  }

  /** at the end of the turn whose sends filled the batch */
  private readonly flushTurn = () => {
    this.flushQueued = false;
    if (this.closed) return this.dropBatch();
    try {
      this.flushBatch();
    } catch (e) {
      this.fail(this.lost(e as Error), false); // the connection is closing: the mux fails the rest
    }
  };

  private grantQueued = false;
  private readonly grantTurn = () => {
    this.grantQueued = false;
    if (this.closed || this.remoteDone) return;
    this.grantedToPeer = this.consumed + this.opts.window;
    const h = headers();
    h.set(H.credit, String(this.grantedToPeer));
    this.frame('credit', h);
  };

  /** Publishes the batch of messages waiting (one alone as a plain data frame). */
  private flushBatch(): void {
    const k = this.batch.length;
    if (!k || !this.peer) return;
    const max = this.nc.info?.max_payload;
    let frame: Uint8Array;
    if (k === 1) frame = this.batch[0]!;
    else {
      frame = new Uint8Array(this.batchBytes);
      const view = new DataView(frame.buffer);
      let at = 0;
      for (const m of this.batch) {
        view.setUint32(at, m.length);
        frame.set(m, at + 4);
        at += 4 + m.length;
      }
    }
    const subject = k === 1 ? `${this.peer}.${this.batchFirst}` : `${this.peer}.${this.batchFirst}.${k}`;
    this.dropBatch();
    if (max !== undefined && frame.length > max) throw tooLarge(this.opts.what, frame.length, max);
    this.nc.publish(subject, frame);
    this.lastSent = Date.now();
  }

  private dropBatch(): void {
    this.batch = [];
    this.batchBytes = 0;
  }

  private endHeaders(h: MsgHdrs = headers()): MsgHdrs {
    h.set(H.n, String(this.sent));
    return h;
  }

  /**
   * Half-closes our side (the client has no more to send). `tell: false` when the peer knows
   * already: a server-streaming call's server expects nothing after the request.
   */
  end(tell = true): void {
    if (this.localEnded || this.closed) return;
    this.localEnded = true;
    if (tell) this.frame('end', this.endHeaders());
    else this.flushBatch();
    this.maybeClose();
  }

  /** The server's last word: the call's status (ok when `err` is undefined). Closes at once. */
  finish(err?: unknown): void {
    if (this.closed) return;
    this.localEnded = true;
    this.frame('end', err === undefined ? this.endHeaders() : errorHeaders(err));
    this.close(err === undefined ? undefined : toBerthError(err));
  }

  /** Aborts the stream on both sides. */
  cancel(err: unknown = new BerthError(Code.Canceled, 'context canceled')): void {
    if (this.closed) return;
    this.frame('cancel', errorHeaders(err));
    this.fail(toBerthError(err), false);
  }

  private fail(err: BerthError, tellPeer = true): void {
    if (this.closed) return;
    if (tellPeer) this.frame('cancel', errorHeaders(err));
    this.failure = err;
    this.close(err);
  }

  private maybeClose(): void {
    if (this.localEnded && this.remoteDone && !this.queue.length) this.close();
  }

  private close(err?: BerthError): void {
    if (this.closed) return;
    this.closed = true;
    this.dropBatch();
    if (err) this.failure ??= err;
    clearInterval(this.timer);
    streamMux(this.nc).unregister(this.inbox);
    const f = this.failure ?? streamClosed;
    for (const w of this.creditWaiters.splice(0)) w.reject(f);
    this.wakeReader();
    this.aborter.abort(f);
    this.onClose?.(err);
  }

  /** The next message, or undefined at a clean end; throws the stream's failure. */
  async recv(): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.queue.length) {
        const m = this.queue.shift()!;
        this.consumed++;
        // grant more once half the window is used up (fewer, larger credit frames), at the end
        // of the turn: a reader that takes a whole batch in one turn grants once for all of it
        if (!this.remoteDone && !this.grantQueued && this.consumed + this.opts.window - this.grantedToPeer >= Math.max(1, this.opts.window >> 1)) {
          this.grantQueued = true;
          setImmediate(this.grantTurn);
        }
        this.maybeClose();
        return m;
      }
      if (this.failure) throw this.failure;
      if (this.remoteDone) {
        this.maybeClose();
        return undefined;
      }
      await new Promise<void>((resolve, reject) => (this.reader = { resolve, reject }));
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (let m = await this.recv(); m !== undefined; m = await this.recv()) yield m;
  }
}
