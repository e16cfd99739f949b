// One end of a flow-controlled message stream over NATS. Both ends own an inbox; every frame
// goes to the peer's inbox, so order holds. Frames are data (no `berth-ctl` header) or control:
//   credit n   the peer may send n more data frames (credit-based flow control: a sender never
//              has more than the receiver's window in flight, so memory stays bounded)
//   end        half-close; the server's end carries the final status (error headers)
//   cancel     abort, from either side, with a status
//   ping       liveness while nothing else is sent; a peer silent for 3 beats is gone
import type { Msg, MsgHdrs, NatsConnection } from '@nats-io/nats-core';
import { streamMux } from './mux.js';
import { BerthError, Code, toBerthError } from '@berth/errdefs';
import { H, headers } from './headers.js';
import { errorFrom, errorHeaders, tooLarge } from './status.js';

export interface ChannelOptions {
  /** how many data frames we accept before granting more */
  window: number;
  /** ms between liveness pings; the peer is declared gone after 3 silent beats */
  heartbeat: number;
  /** what this stream is, for error messages */
  what: string;
}

export const defaultChannelOptions: ChannelOptions = { window: 16, heartbeat: 2000, what: 'stream' };

/** The reason a stream that ended cleanly gives to whatever still waits on it (one shared value: made per stream, it was a measurable cost). */
const streamClosed = new BerthError(Code.Canceled, 'stream closed');

type Waiter = { resolve: () => void; reject: (e: BerthError) => void };

export class Channel implements AsyncIterable<Uint8Array> {
  private peer?: string;
  private credit = 0;
  private peerWindow = 0;
  private creditWaiters: Waiter[] = [];
  private queue: Uint8Array[] = [];
  private reader?: Waiter;
  private consumed = 0;
  /** the peer half-closed (ok) or the stream failed (error) */
  private remoteDone = false;
  private failure?: BerthError;
  private localEnded = false;
  private closed = false;
  private lastHeard = Date.now();
  private lastSent = Date.now();
  private timer?: NodeJS.Timeout;
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
    this.opts = { ...defaultChannelOptions, ...opts };
    this.inbox = streamMux(nc).register((err, msg) => (err ? this.fail(toBerthError(err)) : this.onFrame(msg)));
  }

  /** Once the peer is known (after the handshake): where to send and how much it accepts. */
  connect(peer: string, peerWindow: number): void {
    this.peer = peer;
    this.peerWindow = peerWindow;
    this.addCredit(peerWindow);
    this.timer = setInterval(() => this.beat(), this.opts.heartbeat);
    this.timer.unref();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private onFrame(msg: Msg): void {
    this.lastHeard = Date.now();
    const ctl = msg.headers?.get(H.ctl);
    if (!ctl) {
      if (this.remoteDone) return;
      this.queue.push(msg.data);
      return this.wakeReader();
    }
    switch (ctl) {
      case 'credit': {
        // only a sane count: a bogus frame must not stall or flood the sender
        const n = Number(msg.headers!.get(H.n));
        return this.addCredit(Number.isInteger(n) && n > 0 && n <= this.peerWindow ? n : 0);
      }
      case 'end': {
        const err = errorFrom(msg);
        if (err) return this.fail(err, false);
        this.remoteDone = true;
        if (this.client) this.localEnded = true;
        this.wakeReader();
        return this.maybeClose();
      }
      case 'cancel':
        return this.fail(errorFrom(msg) ?? new BerthError(Code.Canceled, 'context canceled'), false);
      case 'ping':
        return;
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

  private frame(ctl: string, data?: Uint8Array, hdrs: MsgHdrs = headers()): void {
    if (!this.peer || this.nc.isClosed()) return;
    hdrs.set(H.ctl, ctl);
    this.nc.publish(this.peer, data ?? new Uint8Array(), { headers: hdrs });
    this.lastSent = Date.now();
  }

  private beat(): void {
    const now = Date.now();
    if (now - this.lastHeard > 3 * this.opts.heartbeat) {
      this.fail(new BerthError(Code.Unavailable, `${this.opts.what}: peer went away`));
      return;
    }
    if (now - this.lastSent >= this.opts.heartbeat) this.frame('ping');
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
    // data frames carry no headers: the hot path of every stream
    this.nc.publish(this.peer, data);
    this.lastSent = Date.now();
  }

  /**
   * Half-closes our side (the client has no more to send). `tell: false` when the peer knows
   * already: a server-streaming call's server expects nothing after the request.
   */
  end(tell = true): void {
    if (this.localEnded || this.closed) return;
    this.localEnded = true;
    if (tell) this.frame('end');
    this.maybeClose();
  }

  /** The server's last word: the call's status (ok when `err` is undefined). Closes at once. */
  finish(err?: unknown): void {
    if (this.closed) return;
    this.localEnded = true;
    this.frame('end', undefined, err === undefined ? headers() : errorHeaders(err));
    this.close(err === undefined ? undefined : toBerthError(err));
  }

  /** Aborts the stream on both sides. */
  cancel(err: unknown = new BerthError(Code.Canceled, 'context canceled')): void {
    if (this.closed) return;
    this.frame('cancel', undefined, errorHeaders(err));
    this.fail(toBerthError(err), false);
  }

  private fail(err: BerthError, tellPeer = true): void {
    if (this.closed) return;
    if (tellPeer) this.frame('cancel', undefined, errorHeaders(err));
    this.failure = err;
    this.close(err);
  }

  private maybeClose(): void {
    if (this.localEnded && this.remoteDone && !this.queue.length) this.close();
  }

  private close(err?: BerthError): void {
    if (this.closed) return;
    this.closed = true;
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
        if (++this.consumed >= Math.max(1, this.opts.window >> 1)) {
          this.frame('credit', undefined, creditHeaders(this.consumed));
          this.consumed = 0;
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

function creditHeaders(n: number): MsgHdrs {
  const h = headers();
  h.set(H.n, String(n));
  return h;
}
