// The events one shim connection forwards, committed in the order they arrive. Berth's shim host
// sends a container's events without waiting for each answer (shim/src/events.ts), so an event
// must not be committed ahead of one sent before it: calls run one after another, and once one
// fails, those queued behind it fail too (the shim sends them all again, in order, from the
// failed one on). The next call after the queue has emptied runs again.
import { BerthError, Code } from '@berth/errdefs';

export class InOrder {
  private tail: Promise<unknown> = Promise.resolve();
  private queued = 0;
  private failed = false;

  run(fn: () => Promise<void>): Promise<void> {
    this.queued++;
    const done = this.tail
      .then(() => {
        if (this.failed) throw new BerthError(Code.Unavailable, 'an event sent before this one was not committed: send again after it');
        return fn();
      })
      .catch((e) => {
        this.failed = true;
        throw e;
      })
      .finally(() => {
        if (--this.queued === 0) this.failed = false;
      });
    this.tail = done.catch(() => undefined);
    return done;
  }
}
