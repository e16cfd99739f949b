// One subscription per connection for every stream's inbox: `<prefix>.<id>` where the prefix is
// this connection's and the id the stream's. Opening a stream then costs no SUB/UNSUB round in
// nats-server, and a stream's inbox exists before anyone can learn its name.
import { createInbox, type Msg, type NatsConnection, type Subscription } from '@nats-io/nats-core';

type FrameHandler = (err: Error | null, msg: Msg) => void;

class Mux {
  private readonly prefix = createInbox();
  private readonly handlers = new Map<string, FrameHandler>();
  private sub?: Subscription;
  private next = 0;

  constructor(private readonly nc: NatsConnection) {}

  register(handler: FrameHandler): string {
    this.sub ??= this.nc.subscribe(`${this.prefix}.*`, {
      callback: (err, msg) => {
        if (err) {
          for (const h of this.handlers.values()) h(err, msg);
          return;
        }
        this.handlers.get(msg.subject.slice(this.prefix.length + 1))?.(null, msg);
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
