// A ttrpc connection's transport, shared by client and server: frames in through FrameReader,
// frames out as single writes, and reading paused while either side cannot keep up (the
// protocol has no flow control of its own, so back-pressure is the socket's).
import type { Socket } from 'node:net';
import { FrameReader, HEADER_LENGTH, encodeFrame, writeHeader, type FrameSink } from './frame.js';

export interface ChannelEvents extends FrameSink {
  /** The socket is gone; `err` is why, if it failed rather than ended. */
  closed(err: Error | undefined): void;
}

// Below this, copying the data next to the header costs less than a second write; above it a
// corked header + data pair goes out as one writev.
const COPY_LIMIT = 64 * 1024;

export class Channel {
  private holds = 0;
  private drainWaiters: (() => void)[] = [];
  private error: Error | undefined;
  private done = false;

  constructor(
    readonly socket: Socket,
    events: ChannelEvents,
  ) {
    const reader = new FrameReader(events);
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('drain', () => this.flushDrainWaiters());
    socket.on('error', (err) => {
      this.error ??= err;
    });
    socket.on('close', () => {
      this.done = true;
      this.flushDrainWaiters();
      events.closed(this.error);
    });
  }

  get closed(): boolean {
    return this.done || this.socket.destroyed;
  }

  /** Writes whole frames; false means the socket's buffer is past its high-water mark. */
  write(frame: Buffer): boolean {
    if (this.closed) return false;
    return this.socket.write(frame);
  }

  writeFrame(streamId: number, type: number, flags: number, data?: Uint8Array): boolean {
    if (this.closed) return false;
    if (!data || data.length <= COPY_LIMIT) return this.socket.write(encodeFrame(streamId, type, flags, data));
    const header = Buffer.allocUnsafe(HEADER_LENGTH);
    writeHeader(header, data.length, streamId, type, flags);
    this.socket.cork();
    this.socket.write(header);
    const ok = this.socket.write(data);
    this.socket.uncork();
    return ok;
  }

  /** Resolves once the socket has room again (or is gone). */
  drained(): Promise<void> {
    if (this.closed || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Stop reading until every hold is released. */
  hold(): void {
    if (this.holds++ === 0) this.socket.pause();
  }

  release(): void {
    if (this.holds > 0 && --this.holds === 0) this.socket.resume();
  }

  end(): void {
    this.socket.end();
  }

  destroy(err?: Error): void {
    this.socket.destroy(err);
  }

  private flushDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
