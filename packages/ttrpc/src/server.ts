// ttrpc server: handlers by service and method, many connections, each with many calls. A
// handler gets the request bytes and a context (metadata, deadline, and a signal that aborts at
// the deadline or when the caller's connection goes); it returns the response bytes or throws,
// and what it throws reaches the caller as a status through ./status.js.
import { mkdirSync, chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { BerthError, Code, alreadyExists } from '@berth/errdefs';
import { Channel } from './channel.js';
import { Flags, MAX_MESSAGE_LENGTH, MessageType } from './frame.js';
import { MessageQueue } from './queue.js';
import { closedError, deadlineExceeded, statusOf } from './status.js';
import { decodeRequest, encodeResponseFrame, type DecodedRequest, type Metadata, type Status } from './wire.js';

export interface ServerContext {
  readonly service: string;
  readonly method: string;
  /** Keys as sent; each with every value sent for it. */
  readonly metadata: Metadata;
  /** When the caller gives up (ms since the epoch), if it said. */
  readonly deadline: number | undefined;
  /** Aborts at the deadline (reason: DeadlineExceeded) or when the connection goes (Unavailable). */
  readonly signal: AbortSignal;
  /** The connection the call came on: the same object for every call of one connection. */
  readonly connection: object;
}

export type UnaryHandler = (request: Buffer, ctx: ServerContext) => Uint8Array | void | Promise<Uint8Array | void>;

export interface ServerStream extends AsyncIterable<Buffer> {
  /** The caller's next message, or undefined once it closed its side. */
  recv(): Promise<Buffer | undefined>;
  /** Sends one data message; resolves when the socket can take more. */
  send(msg: Uint8Array): Promise<void>;
}

/** Returns the final response (client-streaming calls) or nothing (server-streaming calls end with an empty close). */
export type StreamHandler = (stream: ServerStream, ctx: ServerContext) => Promise<Uint8Array | void>;

export interface StreamKind {
  clientStreaming: boolean;
  serverStreaming: boolean;
}

type Registered = { kind: 'unary'; handler: UnaryHandler } | ({ kind: 'stream'; handler: StreamHandler } & StreamKind);

export interface ListenOptions {
  /** File mode of the socket; containerd's shims use 0600. */
  mode?: number;
}

export class TtrpcServer {
  private readonly services = new Map<string, Map<string, Registered>>();
  private readonly listeners = new Map<net.Server, string>();
  private readonly conns = new Set<ServerConn>();
  private closing: Promise<void> | undefined;

  register(service: string, method: string, handler: UnaryHandler): this {
    this.add(service, method, { kind: 'unary', handler });
    return this;
  }

  registerStream(service: string, method: string, kind: StreamKind, handler: StreamHandler): this {
    this.add(service, method, { kind: 'stream', handler, ...kind });
    return this;
  }

  lookup(service: string, method: string): Registered | BerthError {
    const svc = this.services.get(service);
    if (!svc) return new BerthError(Code.Unimplemented, `service ${service}`);
    return svc.get(method) ?? new BerthError(Code.Unimplemented, `method ${method}`);
  }

  /**
   * Listens on a unix socket path (its folder made if missing). A stale socket file nobody
   * answers on is replaced; one in use is AlreadyExists.
   */
  async listen(path: string, opts: ListenOptions = {}): Promise<void> {
    if (this.closing) throw new BerthError(Code.FailedPrecondition, 'ttrpc: server closed');
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const srv = net.createServer((socket) => this.handleConnection(socket));
    try {
      await listenOn(srv, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      if (await answers(path)) throw alreadyExists(`socket ${path}`);
      unlinkSync(path);
      await listenOn(srv, path);
    }
    chmodSync(path, opts.mode ?? 0o600);
    this.listeners.set(srv, path);
  }

  /** Serves a connection accepted elsewhere (an inherited listener, a socketpair). */
  handleConnection(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new ServerConn(this, socket, () => this.conns.delete(conn));
    this.conns.add(conn);
  }

  get connections(): number {
    return this.conns.size;
  }

  /**
   * Stops listening (removing the socket files) and closes each connection once its calls are
   * answered. After `timeoutMs` the rest are closed anyway, their handlers' signals aborted.
   */
  close(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      for (const [srv, path] of this.listeners) {
        srv.close();
        try {
          unlinkSync(path);
        } catch {}
      }
      this.listeners.clear();
      const all = [...this.conns].map((c) => c.drain());
      let timer: NodeJS.Timeout | undefined;
      if (opts.timeoutMs !== undefined) timer = setTimeout(() => this.destroyAll(), opts.timeoutMs);
      await Promise.all(all);
      clearTimeout(timer);
    })();
    return this.closing;
  }

  /** Closes every connection now. */
  destroyAll(): void {
    for (const c of this.conns) c.destroy();
  }

  private add(service: string, method: string, r: Registered): void {
    let svc = this.services.get(service);
    if (!svc) this.services.set(service, (svc = new Map()));
    if (svc.has(method)) throw alreadyExists(`ttrpc handler ${service}/${method}`);
    svc.set(method, r);
  }
}

function listenOn(srv: net.Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(path, () => {
      srv.off('error', reject);
      resolve();
    });
  });
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Past this much unsent output, stop reading requests until the socket drains. */
const WRITE_BACKLOG = 1 << 20;

class ServerConn {
  private readonly channel: Channel;
  private readonly calls = new Map<number, ServerCall>();
  private lastId = 0;
  private draining = false;
  private heldForWrite = false;
  private readonly gone: Promise<void>;
  private onGone!: () => void;

  constructor(
    private readonly server: TtrpcServer,
    socket: net.Socket,
    onClose: () => void,
  ) {
    this.gone = new Promise((r) => (this.onGone = r));
    this.channel = new Channel(socket, {
      frame: (id, type, flags, data) => this.onFrame(id, type, flags, data),
      oversize: (id, type, _flags, length) => {
        const status = { code: Code.ResourceExhausted, message: `message length ${length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}` };
        if (type === MessageType.Request && id > this.lastId) this.lastId = id;
        const call = this.calls.get(id);
        if (call) call.abandon(status);
        else this.send(encodeResponseFrame(id, status));
      },
      closed: () => {
        const err = closedError();
        for (const c of this.calls.values()) c.abort(err);
        this.calls.clear();
        onClose();
        this.onGone();
      },
    });
    socket.on('error', () => {}); // a peer that vanishes mid-write is an ordinary close
  }

  /** Ends the connection once no call is active. */
  drain(): Promise<void> {
    this.draining = true;
    if (this.calls.size === 0) this.channel.end();
    return this.gone;
  }

  destroy(): void {
    this.channel.destroy();
  }

  send(frame: Buffer): void {
    if (!this.channel.write(frame) || this.channel.socket.writableLength > WRITE_BACKLOG) this.waitForRoom();
  }

  get writer(): Channel {
    return this.channel;
  }

  done(call: ServerCall): void {
    if (this.calls.get(call.id) === call) this.calls.delete(call.id);
    if (this.draining && this.calls.size === 0) this.channel.end();
  }

  private waitForRoom(): void {
    if (this.heldForWrite || this.channel.closed) return;
    this.heldForWrite = true;
    this.channel.hold();
    void this.channel.drained().then(() => {
      this.heldForWrite = false;
      this.channel.release();
    });
  }

  private reject(id: number, code: Code, message: string): void {
    this.send(encodeResponseFrame(id, { code, message }));
  }

  private onFrame(id: number, type: number, flags: number, data: Buffer): void {
    if (id % 2 !== 1) return this.reject(id, Code.InvalidArgument, 'StreamID must be odd for client initiated streams');
    if (type === MessageType.Request) this.onRequest(id, flags, data);
    else if (type === MessageType.Data) this.onData(id, flags, data);
    // other types are reserved for later versions of the protocol: ignored
  }

  private onRequest(id: number, flags: number, data: Buffer): void {
    if (id <= this.lastId) return this.reject(id, Code.InvalidArgument, 'StreamID cannot be re-used and must increment');
    this.lastId = id;
    let req: DecodedRequest;
    try {
      req = decodeRequest(data);
    } catch (err) {
      return this.reject(id, Code.InvalidArgument, `unmarshal request error: ${(err as Error).message}`);
    }
    const r = this.server.lookup(req.service, req.method);
    if (r instanceof BerthError) return this.reject(id, r.code, r.message);
    const deadline = req.timeoutNano > 0 ? Date.now() + req.timeoutNano / 1e6 : undefined;
    if (r.kind === 'unary') {
      const call = new ServerCall(this, id, req, deadline);
      this.calls.set(id, call);
      call.runUnary(r.handler, req.payload ?? EMPTY);
    } else {
      const call = new ServerStreamCall(this, id, req, deadline, r);
      this.calls.set(id, call);
      // The request's payload is the first message, except for a client-streaming call that
      // sent none (an empty first message would otherwise be invented).
      if (req.payload !== undefined || !r.clientStreaming) call.inbound.push(req.payload ?? EMPTY);
      if (!r.clientStreaming || flags & Flags.RemoteClosed) call.inbound.end();
      call.run();
    }
  }

  private onData(id: number, flags: number, data: Buffer): void {
    const call = this.calls.get(id);
    if (!(call instanceof ServerStreamCall)) return this.reject(id, Code.InvalidArgument, 'StreamID is no longer active');
    if (call.inbound.isEnded) return call.abandon({ code: Code.InvalidArgument, message: 'data received after the stream was closed' });
    if (!(flags & Flags.NoData)) call.inbound.push(data);
    if (flags & Flags.RemoteClosed) call.inbound.end();
  }
}

class ServerCall implements ServerContext {
  private controller: AbortController | undefined;
  private reason: unknown;
  private timer: NodeJS.Timeout | undefined;
  protected finished = false;
  readonly service: string;
  readonly method: string;
  readonly metadata: Metadata;

  constructor(
    protected readonly conn: ServerConn,
    readonly id: number,
    req: DecodedRequest,
    readonly deadline: number | undefined,
  ) {
    this.service = req.service;
    this.method = req.method;
    this.metadata = req.metadata;
  }

  get connection(): object {
    return this.conn;
  }

  // Made on first use: most handlers never look, and a controller plus deadline timer per call
  // is measurable on the unary path.
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason !== undefined) this.controller.abort(this.reason);
      else if (!this.finished && this.deadline !== undefined) {
        const left = this.deadline - Date.now();
        if (left <= 0) this.controller.abort(deadlineExceeded());
        else this.timer = setTimeout(() => this.controller!.abort(deadlineExceeded()), left);
      }
    }
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    this.finished = true;
    this.reason ??= reason;
    if (this.timer) clearTimeout(this.timer);
    this.controller?.abort(reason);
  }

  runUnary(handler: UnaryHandler, payload: Buffer): void {
    let result;
    try {
      result = handler(payload, this);
    } catch (err) {
      return this.respond(statusOf(err));
    }
    if (result instanceof Promise) {
      result.then(
        (b) => this.respond(undefined, b ?? undefined),
        (err) => this.respond(statusOf(err)),
      );
    } else this.respond(undefined, result ?? undefined);
  }

  /** Answers with a status now and forgets the call (its handler's signal aborts). */
  abandon(status: Status): void {
    if (this.finished) return;
    this.conn.send(encodeResponseFrame(this.id, status));
    this.abort(new BerthError(status.code as Code, status.message));
    this.conn.done(this);
  }

  protected respond(status: Status | undefined, payload?: Uint8Array): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    this.conn.send(encodeResponseFrame(this.id, status, payload));
    this.conn.done(this);
  }
}

class ServerStreamCall extends ServerCall implements ServerStream {
  readonly inbound: MessageQueue;

  constructor(
    conn: ServerConn,
    id: number,
    req: DecodedRequest,
    deadline: number | undefined,
    private readonly r: StreamKind & { handler: StreamHandler },
  ) {
    super(conn, id, req, deadline);
    this.inbound = new MessageQueue(conn.writer);
  }

  recv(): Promise<Buffer | undefined> {
    return this.inbound.recv();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return this.inbound[Symbol.asyncIterator]();
  }

  async send(msg: Uint8Array): Promise<void> {
    if (!this.r.serverStreaming) throw new BerthError(Code.FailedPrecondition, 'ttrpc: cannot send data from a non-streaming server');
    if (this.finished) throw closedError();
    if (msg.length > MAX_MESSAGE_LENGTH) throw new BerthError(Code.ResourceExhausted, `message length ${msg.length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`);
    const w = this.conn.writer;
    if (!w.writeFrame(this.id, MessageType.Data, 0, msg)) await w.drained();
  }

  run(): void {
    this.r.handler(this, this).then(
      (result) => {
        if (this.r.serverStreaming) this.closeData(result ?? undefined);
        else this.respond(undefined, result ?? undefined);
      },
      (err) => this.respond(statusOf(err)),
    );
  }

  override abort(reason: unknown): void {
    super.abort(reason);
    this.inbound.fail(reason);
  }

  protected override respond(status: Status | undefined, payload?: Uint8Array): void {
    super.respond(status, payload);
    this.inbound.fail(closedError()); // releases a read hold its unread messages kept
  }

  // A server-streaming call ends with a data frame closing the stream (carrying a last
  // message if the handler returned one), as Go's ttrpc does; errors end it with a response.
  private closeData(last: Uint8Array | undefined): void {
    if (this.finished) return;
    if (last && last.length > MAX_MESSAGE_LENGTH) return this.respond(statusOf(new BerthError(Code.ResourceExhausted, `message length ${last.length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`)));
    this.finished = true;
    this.conn.writer.writeFrame(this.id, MessageType.Data, last ? Flags.RemoteClosed : Flags.RemoteClosed | Flags.NoData, last);
    this.inbound.fail(closedError());
    this.conn.done(this);
  }
}

const EMPTY = Buffer.alloc(0);
