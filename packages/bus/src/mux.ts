// One subscription per connection for every stream's inbox: `<prefix>.<id>` where the prefix is
// this connection's and the id the stream's; a stream's data frames go to `<prefix>.<id>.<seq>`.
// Opening a stream then costs no SUB/UNSUB round in nats-server, and a stream's inbox exists
// before anyone can learn its name.
//
// NATS core is at-most-once: while the connection is down, frames in flight are lost. So when it
// drops, everything waiting on this connection's inbox (calls, streams) fails at once rather
// than waiting for a reply or a frame that may never come.
import { createInbox, type Msg, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { BerthError, Code } from '@berth/errdefs';
import { presizePayloads } from './payloads.js';
import { writePerTurn } from './turns.js';

// every process that talks on the bus gathers large frames in buffers of their size (payloads.ts)
// and writes to nats-server once per event-loop turn (turns.ts)
presizePayloads();
writePerTurn();

type FrameHandler = (err: Error | null, msg: Msg) => void;

class Mux {
  private readonly prefix: string;
  private readonly handlers = new Map<string, FrameHandler>();
  private sub?: Subscription;
  private next = 0;
  /** false while the connection to NATS is down: calls then fail at once instead of queueing */
  connected = true;

  constructor(private readonly nc: NatsConnection) {
    // the connection's own inbox prefix: NATS permissions let each user read only its own inboxes
    this.prefix = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
    void this.watch();
  }

  private async watch(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect') {
        this.connected = false;
        this.failAll(new BerthError(Code.Unavailable, 'connection to NATS lost'));
      } else if (s.type === 'reconnect') this.connected = true;
    }
    this.connected = false;
    this.failAll(new BerthError(Code.Unavailable, 'connection to NATS closed'));
  }

  private failAll(err: Error): void {
    for (const h of [...this.handlers.values()]) h(err, undefined as unknown as Msg);
  }

  register(handler: FrameHandler): string {
    this.sub ??= this.nc.subscribe(`${this.prefix}.>`, {
      callback: (err, msg) => {
        if (err) return this.failAll(err);
        const s = msg.subject;
        const start = this.prefix.length + 1;
        const dot = s.indexOf('.', start);
        this.handlers.get(dot < 0 ? s.slice(start) : s.slice(start, dot))?.(null, msg);
      },
    });
    const id = (this.next++).toString(36);
    this.handlers.set(id, handler);
    return `${this.prefix}.${id}`;
  }

  unregister(inbox: string): void {
    this.handlers.delete(inbox.slice(this.prefix.length + 1));
  }
}

const muxes = new WeakMap<NatsConnection, Mux>();

export function streamMux(nc: NatsConnection): Mux {
  let m = muxes.get(nc);
  if (!m) muxes.set(nc, (m = new Mux(nc)));
  return m;
}
