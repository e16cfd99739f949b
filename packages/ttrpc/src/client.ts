// ttrpc client: many calls and streams over one connection, told apart by odd stream ids. The
// protocol has no cancel frame, so a timed-out or cancelled call is only forgotten here (its
// late answer is dropped); the server learns of the deadline through timeout_nano.
import net from 'node:net';
import { BerthError, Code } from '@berth/errdefs';
import { Channel } from './channel.js';
import { Flags, MAX_MESSAGE_LENGTH, MessageType } from './frame.js';
import { MessageQueue } from './queue.js';
import { canceled, closedError, deadlineExceeded, errorOf } from './status.js';
import { decodeResponse, encodeRequestFrame, type MetadataInit } from './wire.js';

export interface CallOptions {
  /** Sent as the request's timeout_nano; the call fails with DeadlineExceeded when it passes. */
  timeoutMs?: number;
  /** ttrpc metadata, e.g. `{ 'containerd-namespace': 'default' }`. */
  metadata?: MetadataInit;
  /** Aborting fails the call with Canceled. */
  signal?: AbortSignal;
}

export interface StreamOptions extends CallOptions {
  /** The client sends data after the request (the request then says `remote open`). */
  clientStreaming: boolean;
  /** The server answers with data messages rather than one response. */
  serverStreaming: boolean;
}

const MAX_STREAM_ID = 0xffffffff;

/** What the client keeps per stream id; one for every call or stream in flight. */
interface Pending {
  onResponse(payload: Buffer | undefined, status: { code: number; message: string } | undefined): void;
  onData(flags: number, data: Buffer): void;
  fail(err: unknown): void;
}

export class TtrpcClient {
  private readonly channel: Channel;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: BerthError | undefined;
  private readonly connected: Promise<void>;
  /** Resolves when the connection is gone, whoever closed it. */
  readonly closed: Promise<void>;

  /** A socket path (connected at once; calls made meanwhile are queued) or a connected socket. */
  constructor(target: string | net.Socket) {
    const socket = typeof target === 'string' ? net.connect(target) : target;
    let onClosed!: () => void;
    this.closed = new Promise((r) => (onClosed = r));
    this.connected = socket.connecting
      ? new Promise((resolve, reject) => {
          socket.once('connect', resolve);
          socket.once('close', () => reject(this.failure ?? closedError()));
        })
      : Promise.resolve();
    this.connected.catch(() => {});
    this.channel = new Channel(socket, {
      frame: (id, type, flags, data) => this.onFrame(id, type, flags, data),
      oversize: (id, _type, _flags, length) => {
        // The frame was skipped whole, so the connection stays good; only its call fails.
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        p.fail(new BerthError(Code.ResourceExhausted, `message length ${length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`));
      },
      closed: (err) => {
        this.failure ??= closedError(err);
        const all = [...this.pending.values()];
        this.pending.clear();
        for (const p of all) p.fail(this.failure);
        onClosed();
      },
    });
  }

  /** Connects to a socket path, failing (Unavailable) if nothing listens there. */
  static async connect(path: string, opts: { timeoutMs?: number } = {}): Promise<TtrpcClient> {
    const client = new TtrpcClient(path);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.connected,
        new Promise((_, reject) => {
          if (opts.timeoutMs) timer = setTimeout(() => reject(new BerthError(Code.DeadlineExceeded, `connect ${path}: timeout`)), opts.timeoutMs);
        }),
      ]);
    } catch (err) {
      client.close();
      const cause = client.failure?.cause as NodeJS.ErrnoException | undefined;
      if (err instanceof BerthError && err.code === Code.Unavailable && cause) {
        throw new BerthError(Code.Unavailable, `connect ${path}: ${cause.message}`, { cause });
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  get isClosed(): boolean {
    return this.failure !== undefined;
  }

  /** Calls and streams awaiting their answer. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** A unary call: request bytes in, response bytes out, or the server's error as a BerthError. */
  call(service: string, method: string, payload: Uint8Array, opts?: CallOptions): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      const signal = opts?.signal;
      if (signal?.aborted) return reject(canceled());
      const timeoutMs = opts?.timeoutMs;
      let id: number;
      let frame: Buffer;
      try {
        id = this.allocateId();
        frame = encodeRequestFrame(id, 0, {
          service,
          method,
          payload,
          timeoutNano: timeoutMs ? Math.round(timeoutMs * 1e6) : 0,
          metadata: opts?.metadata,
        });
      } catch (err) {
        return reject(err);
      }
      const call = new UnaryCall(this.pending, id, resolve, reject);
      if (timeoutMs) call.timer = setTimeout(() => call.finish(deadlineExceeded()), timeoutMs);
      if (signal) call.watch(signal);
      this.pending.set(id, call);
      this.channel.write(frame);
    });
  }

  /** A streaming call; see ClientStream. `first` is the request message of a non-client-streaming call. */
  stream(service: string, method: string, opts: StreamOptions, first?: Uint8Array): ClientStream {
    if (this.failure) throw this.failure;
    if (opts.signal?.aborted) throw canceled();
    const id = this.allocateId();
    const frame = encodeRequestFrame(id, opts.clientStreaming ? Flags.RemoteOpen : Flags.RemoteClosed, {
      service,
      method,
      payload: first,
      timeoutNano: opts.timeoutMs ? Math.round(opts.timeoutMs * 1e6) : 0,
      metadata: opts.metadata,
    });
    const stream = new ClientStream(this.channel, this.pending, id, opts);
    this.pending.set(id, stream);
    this.channel.write(frame);
    return stream;
  }

  /** Closes the connection; everything in flight fails with Unavailable. */
  close(): void {
    this.failure ??= closedError();
    this.channel.destroy();
  }

  private allocateId(): number {
    const id = this.nextId;
    if (id > MAX_STREAM_ID) throw new BerthError(Code.Unavailable, 'ttrpc: stream ids exhausted on this connection');
    this.nextId += 2;
    return id;
  }

  private onFrame(id: number, type: number, flags: number, data: Buffer): void {
    const p = this.pending.get(id);
    if (!p) return; // a call given up (timeout, cancel): its late answer goes nowhere
    if (type === MessageType.Response) {
      this.pending.delete(id);
      let decoded;
      try {
        decoded = decodeResponse(data);
      } catch (err) {
        p.fail(err);
        return;
      }
      p.onResponse(decoded.payload, decoded.status);
    } else if (type === MessageType.Data) {
      p.onData(flags, data);
    }
    // other types are reserved for later protocol versions: ignored, as Go's ttrpc does
  }
}

class UnaryCall implements Pending {
  timer: NodeJS.Timeout | undefined;
  private signal: AbortSignal | undefined;
  private onAbort: (() => void) | undefined;

  constructor(
    private readonly pending: Map<number, Pending>,
    private readonly id: number,
    private readonly resolve: (b: Buffer) => void,
    private readonly reject: (e: unknown) => void,
  ) {}

  watch(signal: AbortSignal): void {
    this.signal = signal;
    this.onAbort = () => this.finish(canceled());
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  onResponse(payload: Buffer | undefined, status: { code: number; message: string } | undefined): void {
    this.cleanup();
    if (status && status.code !== 0) this.reject(errorOf(status));
    else this.resolve(payload ?? EMPTY);
  }

  onData(): void {
    this.pending.delete(this.id);
    this.fail(new BerthError(Code.Internal, 'ttrpc: data received on a unary call'));
  }

  fail(err: unknown): void {
    this.cleanup();
    this.reject(err);
  }

  /** Gives up locally (timeout, cancel). */
  finish(err: BerthError): void {
    this.pending.delete(this.id);
    this.fail(err);
  }

  private cleanup(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.onAbort) this.signal!.removeEventListener('abort', this.onAbort);
  }
}

/**
 * One streaming call. Read the server's messages with `recv()` or `for await`; send yours with
 * `send()` and end them with `closeSend()`. `response` settles when the stream is over: with
 * the final response of a client-streaming call (undefined for server-streaming ones), or with
 * the server's error.
 */
export class ClientStream implements Pending, AsyncIterable<Buffer> {
  private readonly queue: MessageQueue;
  private localClosed: boolean;
  private remoteClosed = false;
  private timer: NodeJS.Timeout | undefined;
  private onAbort: (() => void) | undefined;
  private settle!: { resolve(v: Buffer | undefined): void; reject(e: unknown): void };
  readonly response: Promise<Buffer | undefined>;

  constructor(
    private readonly channel: Channel,
    private readonly pending: Map<number, Pending>,
    readonly id: number,
    private readonly opts: StreamOptions,
  ) {
    this.queue = new MessageQueue(channel);
    this.localClosed = !opts.clientStreaming;
    this.response = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.response.catch(() => {}); // errors also reach readers; an unread response must not crash
    if (opts.timeoutMs) this.timer = setTimeout(() => this.giveUp(deadlineExceeded()), opts.timeoutMs);
    if (opts.signal) {
      this.onAbort = () => this.giveUp(canceled());
      opts.signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  /** Sends one message; resolves when the socket can take more. */
  async send(msg: Uint8Array): Promise<void> {
    if (!this.opts.clientStreaming) throw new BerthError(Code.FailedPrecondition, 'ttrpc: cannot send data from a non-streaming client');
    if (this.localClosed) throw new BerthError(Code.FailedPrecondition, 'ttrpc: stream closed for sending');
    if (this.remoteClosed) throw await this.response.then(() => closedError(), (e) => e);
    if (this.channel.closed) throw closedError();
    if (msg.length > MAX_MESSAGE_LENGTH) throw new BerthError(Code.ResourceExhausted, `message length ${msg.length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`);
    if (!this.channel.writeFrame(this.id, MessageType.Data, 0, msg)) await this.channel.drained();
  }

  /** No more messages from this side (data frame with `remote closed` and `no data`). */
  closeSend(): void {
    if (!this.opts.clientStreaming || this.localClosed) return;
    this.localClosed = true;
    if (!this.remoteClosed) this.channel.writeFrame(this.id, MessageType.Data, Flags.RemoteClosed | Flags.NoData);
  }

  /** The server's next message, undefined at the end, or the stream's error. */
  recv(): Promise<Buffer | undefined> {
    return this.queue.recv();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return this.queue[Symbol.asyncIterator]();
  }

  // ---- Pending: called by the client's reader ----

  onResponse(payload: Buffer | undefined, status: { code: number; message: string } | undefined): void {
    if (status && status.code !== 0) return this.fail(errorOf(status));
    if (this.opts.serverStreaming) {
      if (payload !== undefined) this.queue.push(payload);
      this.end(undefined);
    } else {
      this.end(payload ?? EMPTY);
    }
  }

  onData(flags: number, data: Buffer): void {
    if (!this.opts.serverStreaming) {
      this.pending.delete(this.id);
      return this.fail(new BerthError(Code.Internal, 'ttrpc: data received from a non-streaming server'));
    }
    if (!(flags & Flags.NoData)) this.queue.push(data);
    if (flags & Flags.RemoteClosed) {
      this.pending.delete(this.id);
      this.end(undefined);
    }
  }

  fail(err: unknown): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    this.cleanup();
    this.queue.fail(err);
    this.settle.reject(err);
  }

  private end(result: Buffer | undefined): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    this.cleanup();
    this.queue.end();
    this.settle.resolve(result);
  }

  private giveUp(err: BerthError): void {
    this.pending.delete(this.id);
    this.fail(err);
  }

  private cleanup(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.onAbort) this.opts.signal!.removeEventListener('abort', this.onAbort);
  }
}

const EMPTY = Buffer.alloc(0);
