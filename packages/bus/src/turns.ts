// nats.js writes what a connection has to send in a microtask after the first publish: every
// await between two publishes of one turn (a reply after its JetStream ack, a stream frame after
// its subscriber's queue wakes) is a socket write of its own. Each write to nats-server on
// localhost is a syscall that runs the loopback TCP path and wakes nats-server to read it: in a
// profile of the events service under load, writes were a quarter of its time at 1.7 writes per
// event. Here the connection writes once per event-loop turn (setImmediate runs right after the
// turn's I/O callbacks and their microtasks), and at once when 32 KiB or more wait (nats.js's
// own threshold, so a large frame is not held).
//
// This reaches into the protocol handler (exported as `@nats-io/nats-core/internal`); where it
// is not what this expects, nothing changes and nats.js writes as it came.
import { ProtocolHandler } from '@nats-io/nats-core/internal';

interface Handler {
  outbound?: { size(): number };
  pendingLimit?: number;
  flushPending(): void;
}

const queued = Symbol('berth.flushQueued');
let installed = false;

/** Makes every NATS connection of this process write at most once per event-loop turn while less than 32 KiB waits. */
export function writePerTurn(): void {
  if (installed) return;
  installed = true;
  const proto = ProtocolHandler?.prototype as unknown as Handler | undefined;
  const flush = proto?.flushPending;
  if (!proto || typeof flush !== 'function') return;
  proto.flushPending = function (this: Handler & { [queued]?: boolean }): void {
    const size = this.outbound?.size();
    if (typeof size !== 'number' || typeof this.pendingLimit !== 'number' || size >= this.pendingLimit) return flush.call(this);
    if (this[queued]) return;
    this[queued] = true;
    setImmediate(() => {
      this[queued] = false;
      flush.call(this);
    });
  };
}

/** @internal for the test: whether connections write once per turn */
export function writesPerTurn(): boolean {
  return installed;
}
