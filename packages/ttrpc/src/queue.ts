// Messages received on one stream, waiting for their reader. A reader that falls behind holds
// the whole connection's reading (head-of-line, as in Go's ttrpc), which is the protocol's only
// back-pressure: the peer's writes then block in its socket.
import type { Channel } from './channel.js';

// Read holds once a reader is this far behind, in messages or in bytes.
const HIGH_WATER = 64;
const HIGH_WATER_BYTES = 1 << 20;

type Waiter = { resolve(v: Buffer | undefined): void; reject(e: unknown): void };

export class MessageQueue implements AsyncIterable<Buffer> {
  private items: Buffer[] = [];
  private head = 0;
  private waiter: Waiter | undefined;
  private ended = false;
  private failure: unknown;
  private holding = false;
  private bytes = 0;

  constructor(private readonly channel: Channel) {}

  get isEnded(): boolean {
    return this.ended;
  }

  push(msg: Buffer): void {
    if (this.ended) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(msg);
      return;
    }
    // data views a socket chunk shared with other frames; a queued one is copied so holding
    // it does not pin the chunk
    this.items.push(Buffer.from(msg));
    this.bytes += msg.length;
    if (!this.holding && (this.items.length - this.head >= HIGH_WATER || this.bytes >= HIGH_WATER_BYTES)) {
      this.holding = true;
      this.channel.hold();
    }
  }

  /** No more messages; readers get the queued ones, then the end. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.waiter && this.head === this.items.length) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(undefined);
    }
  }

  /** Ends the queue with an error, which readers get after what was already received. */
  fail(err: unknown): void {
    if (this.ended && this.failure === undefined && this.head === this.items.length) return; // already read to its end
    if (this.failure === undefined) this.failure = err;
    this.unhold();
    this.ended = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(err);
    }
  }

  /** The next message, or undefined at the end. */
  recv(): Promise<Buffer | undefined> {
    if (this.head < this.items.length) {
      const msg = this.items[this.head]!;
      this.items[this.head++] = undefined as never;
      this.bytes -= msg.length;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
        this.unhold();
      }
      return Promise.resolve(msg);
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve(undefined);
    if (this.waiter) return Promise.reject(new Error('ttrpc: concurrent recv on one stream'));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      const msg = await this.recv();
      if (msg === undefined) return;
      yield msg;
    }
  }

  private unhold(): void {
    if (this.holding) {
      this.holding = false;
      this.channel.release();
    }
  }
}
