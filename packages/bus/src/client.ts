// Calling a service over the bus: plain request/reply for unary methods (nobody listening
// answers at once with no-responders, which is Unavailable), a handshake and then a Channel
// for streaming ones.
import type { Msg, MsgHdrs, NatsConnection } from '@nats-io/nats-core';
import { streamMux } from './mux.js';
import { BerthError, Code } from '@berth/errdefs';
import { Channel, clampLiveness, type ChannelOptions } from './channel.js';
import { contextHeaders, H, type CallContext } from './headers.js';
import { errorFrom, noResponders, publishFailure, tooLarge } from './status.js';

export interface CallOptions {
  /** ms to wait for the reply when the context has no deadline */
  timeout?: number;
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
   * it fails at once with Canceled and the service is told to abort the call.
   */
  async unary(subject: string, payload: Uint8Array, ctx: CallContext = {}, opts: CallOptions = {}): Promise<Uint8Array> {
    this.checkConnected(subject);
    const msg = await this.request(subject, payload, contextHeaders(ctx), this.timeoutFor(ctx, opts), ctx.signal);
    const err = errorFrom(msg);
    if (err) throw err;
    return msg.data;
  }

  /** The reply message (which may carry an error status), or a failure to get one. */
  private request(subject: string, payload: Uint8Array, h: MsgHdrs, timeout: number, signal?: AbortSignal): Promise<Msg> {
    if (signal?.aborted) return Promise.reject(canceled(subject, signal));
    const max = this.nc.info?.max_payload;
    if (max !== undefined && payload.length > max) return Promise.reject(tooLarge(subject, payload.length, max));
    const mux = streamMux(this.nc);
    const liveness = clampLiveness(this.liveness, 1000)!;
    return new Promise<Msg>((resolve, reject) => {
      let lastHeard = Date.now();
      const done = (f: () => void) => {
        clearTimeout(overall);
        clearInterval(watch);
        signal?.removeEventListener('abort', onAbort);
        mux.unregister(inbox);
        f();
      };
      const inbox = mux.register((err, msg) => {
        if (err) return done(() => reject(err instanceof BerthError ? new BerthError(err.code, `${subject}: ${err.message}`) : publishFailure(err, subject)));
        lastHeard = Date.now();
        if (msg.headers?.get(H.ctl) === 'ping') return;
        // nobody serves the subject: NATS answers the reply subject with a 503 at once
        if (msg.headers?.hasError && msg.headers.code === 503) return done(() => reject(noResponders(subject)));
        done(() => resolve(msg));
      });
      const onAbort = () =>
        done(() => {
          try {
            this.nc.publish(cancelSubject(subject), inbox);
          } catch {
            // the connection is closing: the service's call ends without anyone to answer
          }
          reject(canceled(subject, signal!));
        });
      signal?.addEventListener('abort', onAbort, { once: true });
      const overall = setTimeout(() => done(() => reject(new BerthError(Code.DeadlineExceeded, `${subject}: context deadline exceeded`))), timeout);
      const watch = setInterval(() => {
        if (Date.now() - lastHeard > 3 * liveness) done(() => reject(new BerthError(Code.Unavailable, `${subject}: the service went away during the call`)));
      }, liveness);
      h.set(H.liveness, String(liveness));
      try {
        this.nc.publish(subject, payload, { reply: inbox, headers: h });
      } catch (e) {
        done(() => reject(publishFailure(e, subject)));
      }
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
    h.set(H.ctl, kind);
    let msg;
    try {
      msg = await this.request(subject, first ?? new Uint8Array(), h, Math.min(this.handshakeTimeout, this.timeoutFor(ctx, {})), ctx.signal);
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
    ch.connect(peer, msg.headers!.get(H.window), msg.headers!.get(H.liveness));
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
