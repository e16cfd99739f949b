// Writing a stream's messages to a gRPC call with a bound on what waits in the gateway. grpc-js
// takes up to 16 messages (its object-mode high-water mark) before write() says to wait: with
// messages of 1 MiB that was 16 MiB per stream, held twice (each message is copied to add the
// gRPC frame header). Here a message goes out only while fewer than `limit` are still between
// the gateway and HTTP/2 (and fewer than `maxBytes` of them), which itself sends only what the
// client's flow-control window takes.
type Writable = {
  cancelled: boolean;
  write(b: Buffer, cb: (err?: Error | null) => void): boolean;
  once(ev: 'cancelled' | 'close', f: () => void): unknown;
};

export class Outflow {
  private inflight = 0;
  private bytes = 0;
  private waiter?: () => void;
  private gone = false;

  constructor(
    private readonly call: Writable,
    private readonly limit: number,
    private readonly maxBytes = Infinity,
  ) {
    // a cancelled call never calls back for what it had: whoever waits is told it is over
    const over = () => {
      this.gone = true;
      this.wake();
    };
    call.once('cancelled', over);
    call.once('close', over);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private get over(): boolean {
    return this.gone || this.call.cancelled;
  }

  /** Resolves true once another message may go, false when the call is over. */
  async room(): Promise<boolean> {
    while (!this.over && (this.inflight >= this.limit || this.bytes >= this.maxBytes)) await new Promise<void>((r) => (this.waiter = r));
    return !this.over;
  }

  /** Resolves true once everything written went out, false when the call is over. */
  async flushed(): Promise<boolean> {
    while (!this.over && this.inflight > 0) await new Promise<void>((r) => (this.waiter = r));
    return !this.over;
  }

  /** Hands a message to the call (after room() said so); false when the call is over. */
  write(b: Buffer): boolean {
    if (this.over) return false;
    this.inflight++;
    this.bytes += b.length;
    this.call.write(b, () => {
      this.inflight--;
      this.bytes -= b.length;
      this.wake();
    });
    return true;
  }
}
