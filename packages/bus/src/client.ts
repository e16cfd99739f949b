// Calling a service over the bus: plain request/reply for unary methods (nobody listening
// answers at once with no-responders, which is Unavailable), a handshake and then a Channel
// for streaming ones.
import type { Msg, MsgHdrs, NatsConnection } from '@nats-io/nats-core';
import { streamMux } from './mux.js';
import { BerthError, Code } from '@berth/errdefs';
import { Channel, clampLiveness, type ChannelOptions } from './channel.js';
import { contextHeaders, H, namespaceOnly, type CallContext } from './headers.js';
import { errorFrom, noResponders, publishFailure, tooLarge } from './status.js';
import { TimerTicks } from './stall.js';

/**
 * A cheaper way than an AbortSignal to cancel a call (the gateway forwards thousands a second):
 * called once the request is out with the function that cancels it; returns what stops listening.
 */
export type OnCancel = (abort: (reason?: unknown) => void) => () => void;

export interface CallOptions {
  /** ms to wait for the reply when the context has no deadline */
  timeout?: number;
  onCancel?: OnCancel;
  /**
   * Sees the reply the moment it arrives, before anything received after it is handled (the
   * promise resolves later, in a microtask): the gateway's read cache (readcache.ts) orders
   * replies and change notices by it.
   */
  onReply?: (msg: Msg) => void;
}

interface Pending {
  subject: string;
  liveness: number;
  lastHeard: number;
  /** when the default timeout ends the call (Infinity: a timer of its own does) */
  expires: number;
  fail(e: BerthError): void;
}

export type StreamKind = 'server' | 'bidi';

/**
 * Where the process serving `subject` listens for cancellations of its calls in flight: the
 * method's token replaced by `$cancel` (`berth.<node>.<service>.v1.$cancel`), without a queue
 * group, so whichever replica runs the call hears it. The payload is the call's reply inbox.
 */
export function cancelSubject(subject: string): string {
  return `${subject.slice(0, subject.lastIndexOf('.'))}.$cancel`;
}

const canceled = (what: string, signal: AbortSignal): BerthError => {
  const r: unknown = signal.reason;
  return r instanceof BerthError ? r : new BerthError(Code.Canceled, `${what}: context canceled`);
};

/** headers that carry their liveness already and are only ever encoded (see unaryHeaders) */
const preEncoded = new WeakSet<MsgHdrs>();

export class BusClient {
  /**
   * unary calls without a deadline give up after this long: a dead service is noticed sooner,
   * by its missing beats; this bounds a handler that hangs in a live service
   */
  defaultTimeout = 600_000;
  /** ms between a running unary call's liveness beats */
  liveness = 1000;
  /** how long a stream's opening handshake may take */
  handshakeTimeout = 10_000;
  channelOptions: Partial<ChannelOptions> = {};

  constructor(readonly nc: NatsConnection) {
    streamMux(nc); // watches the connection from now on
  }

  private checkConnected(subject: string): void {
    if (!streamMux(this.nc).connected || this.nc.isClosed()) throw new BerthError(Code.Unavailable, `${subject}: connection to NATS lost, reconnecting`);
  }

  private timeoutFor(ctx: CallContext, opts: CallOptions): number {
    if (ctx.deadline !== undefined) {
      const left = ctx.deadline - Date.now();
      if (left <= 0) throw new BerthError(Code.DeadlineExceeded, 'context deadline exceeded');
      return left;
    }
    return opts.timeout ?? this.defaultTimeout;
  }

  /**
   * One request, one reply. The reply comes to this connection's shared inbox; while the call
   * runs the service sends a beat every `liveness` ms, so a service that died mid-call is
   * noticed after three silent beats (Unavailable) instead of at the deadline. When the
   * connection drops the call fails at once (the reply may be lost); when `ctx.signal` aborts
   * (or `opts.onCancel`'s abort is called) it fails at once with Canceled and the service is
   * told to abort the call.
   */
  async unary(subject: string, payload: Uint8Array, ctx: CallContext = {}, opts: CallOptions = {}): Promise<Uint8Array> {
    this.checkConnected(subject);
    const exact = ctx.deadline !== undefined || opts.timeout !== undefined;
    const msg = await this.request(subject, payload, this.unaryHeaders(ctx), this.timeoutFor(ctx, opts), exact, ctx.signal, opts.onCancel, opts.onReply);
    const err = errorFrom(msg);
    if (err) throw err;
    return msg.data;
  }

  /**
   * A call with nothing but a namespace (most calls) sends the same headers every time: encoded
   * once per namespace and liveness, since publish only asks headers for their bytes. Building
   * and encoding them was a sixth of the gateway's own work per forwarded call.
   */
  private readonly encodedHeaders = new Map<string, MsgHdrs>();

  private unaryHeaders(ctx: CallContext): MsgHdrs {
    if (!namespaceOnly(ctx)) return contextHeaders(ctx);
    const liveness = clampLiveness(this.liveness, 1000)!;
    const key = `${liveness} ${ctx.namespace ?? ''}`;
    let h = this.encodedHeaders.get(key);
    if (!h) {
      const real = contextHeaders(ctx);
      real.set(H.liveness, String(liveness));
      const bytes = (real as unknown as { encode(): Uint8Array }).encode();
      h = { encode: () => bytes } as unknown as MsgHdrs;
      preEncoded.add(h);
      if (this.encodedHeaders.size >= 1024) this.encodedHeaders.clear();
      this.encodedHeaders.set(key, h);
    }
    return h;
  }

  /** calls waiting for a reply, watched by one timer for silence and for the default timeout */
  private readonly pending = new Set<Pending>();
  private sweeper?: NodeJS.Timeout;
  private sweepEvery = 0;
  private sweepTicks?: TimerTicks;

  private watch(p: Pending): void {
    this.pending.add(p);
    if (this.sweeper && this.sweepEvery <= p.liveness) return;
    clearInterval(this.sweeper);
    this.sweepEvery = p.liveness;
    this.sweepTicks = new TimerTicks(p.liveness);
    this.sweeper = setInterval(() => this.sweep(), p.liveness);
    this.sweeper.unref();
  }

  private unwatch(p: Pending): void {
    this.pending.delete(p);
    if (this.pending.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private sweep(): void {
    const now = Date.now();
    const stalled = this.sweepTicks?.stalled(now) ?? 0;
    for (const p of this.pending) {
      p.lastHeard += stalled; // (stall.ts) our own stall is not the service's silence
      if (now >= p.expires) p.fail(new BerthError(Code.DeadlineExceeded, `${p.subject}: context deadline exceeded`));
      else if (now - p.lastHeard > 3 * p.liveness) p.fail(new BerthError(Code.Unavailable, `${p.subject}: the service went away during the call`));
    }
  }

  /**
   * The reply message (which may carry an error status), or a failure to get one. Silence and a
   * caller's default timeout are watched by one shared timer (checked every liveness beat); a
   * deadline the caller set gets a timer of its own, so it fires when it is due.
   */
  private request(subject: string, payload: Uint8Array, h: MsgHdrs, timeout: number, exact: boolean, signal?: AbortSignal, onCancel?: OnCancel, onReply?: (msg: Msg) => void): Promise<Msg> {
    if (signal?.aborted) return Promise.reject(canceled(subject, signal));
    const max = this.nc.info?.max_payload;
    if (max !== undefined && payload.length > max) return Promise.reject(tooLarge(subject, payload.length, max));
    const mux = streamMux(this.nc);
    const liveness = clampLiveness(this.liveness, 1000)!;
    return new Promise<Msg>((resolve, reject) => {
      let overall: NodeJS.Timeout | undefined;
      let unlisten: (() => void) | undefined;
      let finished = false;
      const done = (f: () => void) => {
        if (finished) return;
        finished = true;
        if (overall) clearTimeout(overall);
        this.unwatch(p);
        signal?.removeEventListener('abort', onAbort);
        unlisten?.();
        mux.unregister(inbox);
        f();
      };
      const p: Pending = { subject, liveness, lastHeard: Date.now(), expires: exact ? Infinity : Date.now() + timeout, fail: (e) => done(() => reject(e)) };
      const inbox = mux.register((err, msg) => {
        if (err) return done(() => reject(err instanceof BerthError ? new BerthError(err.code, `${subject}: ${err.message}`) : publishFailure(err, subject)));
        p.lastHeard = Date.now();
        const hdrs = msg.headers;
        if (hdrs) {
          if (hdrs.get(H.ctl) === 'ping') return;
          // nobody serves the subject: NATS answers the reply subject with a 503 at once
          if (hdrs.hasError && hdrs.code === 503) return done(() => reject(noResponders(subject)));
        }
        if (!finished) onReply?.(msg);
        done(() => resolve(msg));
      });
      const abort = (reason?: unknown) =>
        done(() => {
          try {
            this.nc.publish(cancelSubject(subject), inbox);
          } catch {
            // the connection is closing: the service's call ends without anyone to answer
          }
          reject(reason instanceof BerthError ? reason : signal ? canceled(subject, signal) : new BerthError(Code.Canceled, `${subject}: context canceled`));
        });
      const onAbort = () => abort(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (exact) overall = setTimeout(() => p.fail(new BerthError(Code.DeadlineExceeded, `${subject}: context deadline exceeded`)), timeout);
      this.watch(p);
      if (!preEncoded.has(h)) h.set(H.liveness, String(liveness));
      try {
        this.nc.publish(subject, payload, { reply: inbox, headers: h });
      } catch (e) {
        done(() => reject(publishFailure(e, subject)));
        return;
      }
      if (onCancel && !finished) unlisten = onCancel(abort);
    });
  }

  /**
   * Opens a stream. `first` is the request of a server-streaming call; a bidi call opens
   * empty and sends with `channel.send`. The channel yields the responses and throws the
   * final status if it is an error. `ctx.signal` cancels the stream on both sides.
   */
  async open(subject: string, kind: StreamKind, first: Uint8Array | undefined, ctx: CallContext = {}, opts: Partial<ChannelOptions> = {}): Promise<Channel> {
    this.checkConnected(subject);
    const options = { what: subject, ...this.channelOptions, ...opts };
    const ch = new Channel(this.nc, options, true);
    const h = contextHeaders(ctx);
    h.set(H.inbox, ch.inbox);
    h.set(H.window, String(ch.opts.window));
    h.set(H.liveness, String(ch.opts.heartbeat));
    h.set(H.batch, '1');
    h.set(H.ctl, kind);
    let msg;
    try {
      msg = await this.request(subject, first ?? new Uint8Array(), h, Math.min(this.handshakeTimeout, this.timeoutFor(ctx, {})), true, ctx.signal);
    } catch (err) {
      ch.cancel(err);
      throw err;
    }
    const err = errorFrom(msg);
    const peer = msg.headers?.get(H.inbox);
    if (err || !peer) {
      const e = err ?? new BerthError(Code.Internal, `${subject}: stream handshake without inbox`);
      ch.cancel(e);
      throw e;
    }
    ch.connect(peer, msg.headers!.get(H.window), msg.headers!.get(H.liveness), msg.headers!.get(H.batch));
    if (kind === 'server') ch.end(false); // nothing more to send: the request came with the handshake
    const signal = ctx.signal;
    if (signal) {
      if (signal.aborted) ch.cancel(canceled(subject, signal));
      const onAbort = () => ch.cancel(canceled(subject, signal));
      signal.addEventListener('abort', onAbort, { once: true });
      ch.signal.addEventListener('abort', () => signal.removeEventListener('abort', onAbort), { once: true });
    }
    if (ctx.deadline !== undefined && !ch.isClosed) {
      const t = setTimeout(() => ch.cancel(new BerthError(Code.DeadlineExceeded, 'context deadline exceeded')), Math.max(0, ctx.deadline - Date.now()));
      t.unref();
      ch.signal.addEventListener('abort', () => clearTimeout(t), { once: true });
    }
    return ch;
  }
}
