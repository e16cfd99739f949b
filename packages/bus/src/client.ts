// Calling a service over the bus: plain request/reply for unary methods (nobody listening
// answers at once with no-responders, which is Unavailable), a handshake and then a Channel
// for streaming ones.
import type { NatsConnection } from '@nats-io/nats-core';
import { BerthError, Code } from '@berth/errdefs';
import { Channel, type ChannelOptions } from './channel.js';
import { contextHeaders, H, type CallContext } from './headers.js';
import { errorFrom, requestFailure } from './status.js';

export interface CallOptions {
  /** ms to wait for the reply when the context has no deadline */
  timeout?: number;
}

export type StreamKind = 'server' | 'bidi';

export class BusClient {
  /** unary calls without a deadline give up after this long (a dead service cannot answer) */
  defaultTimeout = 120_000;
  /** how long a stream's opening handshake may take */
  handshakeTimeout = 10_000;
  channelOptions: Partial<ChannelOptions> = {};

  /** false while the connection to NATS is down: calls then fail at once instead of queueing */
  private connected = true;

  constructor(readonly nc: NatsConnection) {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') this.connected = false;
        else if (s.type === 'reconnect') this.connected = true;
      }
    })();
  }

  private checkConnected(subject: string): void {
    if (!this.connected || this.nc.isClosed()) throw new BerthError(Code.Unavailable, `${subject}: connection to NATS lost, reconnecting`);
  }

  private timeoutFor(ctx: CallContext, opts: CallOptions): number {
    if (ctx.deadline !== undefined) {
      const left = ctx.deadline - Date.now();
      if (left <= 0) throw new BerthError(Code.DeadlineExceeded, 'context deadline exceeded');
      return left;
    }
    return opts.timeout ?? this.defaultTimeout;
  }

  async unary(subject: string, payload: Uint8Array, ctx: CallContext = {}, opts: CallOptions = {}): Promise<Uint8Array> {
    this.checkConnected(subject);
    const timeout = this.timeoutFor(ctx, opts);
    let msg;
    try {
      msg = await this.nc.request(subject, payload, { timeout, headers: contextHeaders(ctx) });
    } catch (err) {
      throw requestFailure(err, subject);
    }
    const err = errorFrom(msg);
    if (err) throw err;
    return msg.data;
  }

  /**
   * Opens a stream. `first` is the request of a server-streaming call; a bidi call opens
   * empty and sends with `channel.send`. The channel yields the responses and throws the
   * final status if it is an error.
   */
  async open(subject: string, kind: StreamKind, first: Uint8Array | undefined, ctx: CallContext = {}, opts: Partial<ChannelOptions> = {}): Promise<Channel> {
    this.checkConnected(subject);
    const options = { what: subject, ...this.channelOptions, ...opts };
    const ch = new Channel(this.nc, options, true);
    const h = contextHeaders(ctx);
    h.set(H.inbox, ch.inbox);
    h.set(H.window, String(ch.opts.window));
    h.set(H.ctl, kind);
    let msg;
    try {
      const timeout = Math.min(this.handshakeTimeout, this.timeoutFor(ctx, {}));
      msg = await this.nc.request(subject, first ?? new Uint8Array(), { timeout, headers: h });
    } catch (err) {
      ch.cancel(requestFailure(err, subject));
      throw requestFailure(err, subject);
    }
    const err = errorFrom(msg);
    const peer = msg.headers?.get(H.inbox);
    if (err || !peer) {
      const e = err ?? new BerthError(Code.Internal, `${subject}: stream handshake without inbox`);
      ch.cancel(e);
      throw e;
    }
    ch.connect(peer, Number(msg.headers!.get(H.window)) || 1);
    if (kind === 'server') ch.end(false); // nothing more to send: the request came with the handshake
    if (ctx.deadline !== undefined) {
      const t = setTimeout(() => ch.cancel(new BerthError(Code.DeadlineExceeded, 'context deadline exceeded')), Math.max(0, ctx.deadline - Date.now()));
      t.unref();
      const prev = ch.onClose;
      ch.onClose = (e) => {
        clearTimeout(t);
        prev?.(e);
      };
    }
    return ch;
  }
}
