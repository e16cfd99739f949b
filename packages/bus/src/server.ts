// Serving methods on the bus. Every endpoint is registered with the NATS micro service API
// (`$SRV.INFO` lists it, with its node and gRPC path in the metadata) in queue group `berth`,
// so replicas of a service share the load.
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { Svcm, type Service, type ServiceMsg } from '@nats-io/services';
import { BerthError, Code, toBerthError } from '@berth/errdefs';
import { codec, type Codec, type MethodInfo, type ServiceInfo } from '@berth/api';
import { Channel, clampLiveness, type ChannelOptions } from './channel.js';
import type { ChangeNotices } from './changes.js';
import { cancelSubject } from './client.js';
import { contextFrom, H, headers, type CallContext } from './headers.js';
import { headerText, tooLarge } from './status.js';
import { rpcSubject } from './subjects.js';

/** What a handler gets besides the request: `signal` aborts when the caller cancels or goes away. */
export interface StreamContext extends CallContext {
  signal: AbortSignal;
}
export type UnaryHandler<Req = any, Res = any> = (req: Req, ctx: StreamContext) => Promise<Res> | Res;
export type ServerStreamHandler<Req = any, Res = any> = (req: Req, ctx: StreamContext, send: (res: Res) => Promise<void>) => Promise<void>;
export interface BidiStream<Req = any, Res = any> {
  /** the client's messages, until it half-closes */
  recv(): AsyncIterable<Req>;
  send(res: Res): Promise<void>;
}
export type BidiHandler<Req = any, Res = any> = (ctx: StreamContext, stream: BidiStream<Req, Res>) => Promise<void>;
/** A containerd service's handlers by method name (each one a Unary, ServerStream or Bidi handler). */
export type GrpcHandlers = Record<string, (...args: any[]) => unknown>;
export type RawHandler = (data: Uint8Array, ctx: StreamContext) => Promise<Uint8Array> | Uint8Array;

export interface ServiceOptions {
  /** short bus name: `content`, `namespaces`, ... (the subject's service token) */
  name: string;
  node: string;
  version?: string;
  description?: string;
  /** published in the micro service metadata: e.g. the containerd plugins this process provides */
  metadata?: Record<string, string>;
  channel?: Partial<ChannelOptions>;
  /** open streams this service serves at most; more are refused with ResourceExhausted */
  maxStreams?: number;
  /**
   * The service's change notices (changes.ts): every unary reply then carries the state it was
   * sent in, and a reply of a method in `cacheable` (reads of the store alone, whose answer
   * depends on nothing else) says when it may be kept.
   */
  changes?: ChangeNotices;
  cacheable?: readonly string[];
  /**
   * Writes whose answer is also what a read of the record they wrote answers (Containers.Create
   * and Get, Snapshots.Prepare and Mounts): their reply says it may be kept as that read's answer
   * when their own write was the only one while they ran. Only a method that writes exactly once
   * when it succeeds may be named here (the rule counts writes, it does not know whose they are).
   */
  seeds?: readonly string[];
}

export const defaultMaxStreams = 1024;

/** Whether a method's answer may be kept by the gateway: as a read's, as the seed of a read's, or not. */
type Kept = 'read' | 'seed' | 'no';

/** A unary call in flight: its AbortController exists once someone needs it. */
interface Running {
  ac?: AbortController;
  aborted: boolean;
}

/** Bytes that are not the message they claim to be are the caller's error, not ours. */
export function decodeMessage(c: Pick<Codec, 'name' | 'decode'>, data: Uint8Array): any {
  try {
    return c.decode(data);
  } catch (e) {
    throw new BerthError(Code.InvalidArgument, `malformed ${c.name}: ${(e as Error).message}`);
  }
}

// BERTH_BUS_TRACE=1: each answered call's time inside the service (from arrival to reply), to tell
// the service's own work from the bus hops around it
const tracing = !!process.env.BERTH_BUS_TRACE;

export class BusServer {
  private readonly channels = new Set<Channel>();
  /** unary calls in flight by reply inbox, for the caller's cancel */
  private readonly running = new Map<string, Running>();
  private readonly beats = new Map<number, { timer: NodeJS.Timeout; replies: Set<string> }>();
  private readonly cancels: Subscription;

  private constructor(readonly nc: NatsConnection, readonly opts: ServiceOptions, private readonly svc: Service) {
    this.cancels = nc.subscribe(cancelSubject(this.subject('x')), {
      callback: (err, msg) => {
        const run = err ? undefined : this.running.get(msg.string());
        if (!run || run.aborted) return;
        run.aborted = true;
        (run.ac ??= new AbortController()).abort(new BerthError(Code.Canceled, 'context canceled'));
      },
    });
  }

  static async start(nc: NatsConnection, opts: ServiceOptions): Promise<BusServer> {
    const svc = await new Svcm(nc).add({
      name: `berth-${opts.name}`,
      version: opts.version ?? '0.1.0',
      description: opts.description ?? `Berth ${opts.name} service`,
      metadata: { node: opts.node, ...opts.metadata },
      queue: 'berth',
    });
    return new BusServer(nc, opts, svc);
  }

  subject(method: string): string {
    return rpcSubject(this.opts.node, this.opts.name, method);
  }

  private endpoint(method: string, onMsg: (msg: ServiceMsg) => void, metadata: Record<string, string>): void {
    this.svc.addEndpoint(method, {
      subject: this.subject(method),
      metadata,
      handler: (err, msg) => {
        // A call is a request that wants its answer in a caller's inbox. Anything else on a service
        // subject is not a call: e.g. a JetStream push consumer that a subscriber pointed at this
        // subject (nats-server 2.9 does not check a consumer's deliver subject against its
        // creator's permissions) delivers stored events here, with a `$JS.ACK` reply or none.
        if (!err && msg.reply?.startsWith('_INBOX.')) onMsg(msg);
      },
    });
  }

  /** A raw endpoint: bytes in, bytes out, a thrown error becomes the reply's status. */
  raw(method: string, handler: RawHandler, metadata: Record<string, string> = {}): void {
    const kind: Kept = !this.opts.changes ? 'no' : this.opts.cacheable?.includes(method) ? 'read' : this.opts.seeds?.includes(method) ? 'seed' : 'no';
    this.endpoint(method, (msg) => void this.answer(msg, handler, kind), metadata);
  }

  private async answer(msg: ServiceMsg, handler: RawHandler, kept: Kept = 'no'): Promise<void> {
    const t0 = tracing ? performance.now() : 0;
    const changes = this.opts.changes;
    const start = kept === 'no' ? -1 : changes!.readStart();
    // a Berth caller asks for liveness beats while a call runs, so it can tell a slow call from a
    // dead service; other NATS clients get the plain single reply
    const every = clampLiveness(msg.headers?.get(H.liveness));
    const reply = msg.reply;
    const run: Running = { aborted: false };
    if (reply) {
      this.running.set(reply, run);
      if (every !== undefined) this.beating(every).add(reply);
    }
    try {
      // the signal is made when a handler asks for it (most never do) or the caller cancels; a
      // getter of the literal itself, so a handler's `{ ...ctx }` copies it
      const ctx: StreamContext = {
        ...contextFrom(msg.headers),
        get signal() {
          return (run.ac ??= new AbortController()).signal;
        },
      };
      if (ctx.deadline !== undefined && ctx.deadline < Date.now()) throw new BerthError(Code.DeadlineExceeded, 'context deadline exceeded');
      const res = await handler(msg.data, ctx);
      if (run.aborted) return; // the caller gave up: nobody waits for the answer
      const max = this.nc.info?.max_payload;
      if (max !== undefined && res.length > max) throw tooLarge(msg.subject, res.length, max);
      // the state is read as the reply leaves: no notice can be made between the two
      msg.respond(res, changes ? { headers: kept === 'seed' ? changes.stampWrite(start, ctx.readsRecord) : changes.stamp(start, ctx.readsRecord) } : undefined);
      if (tracing) console.error(`trace ${msg.subject} ${(performance.now() - t0).toFixed(2)} ms at=${(performance.timeOrigin + t0).toFixed(1)}`);
    } catch (err) {
      if (!run.aborted) msg.respondError(...this.status(msg.subject, err));
    } finally {
      if (reply) {
        this.running.delete(reply);
        if (every !== undefined) this.unbeat(every, reply);
      }
    }
  }

  /**
   * The calls in flight that want a beat every `every` ms: one timer per interval for all of
   * them, instead of one per call (a call that answers within the interval never sees it).
   */
  private beating(every: number): Set<string> {
    let b = this.beats.get(every);
    if (!b) {
      const replies = new Set<string>();
      const timer = setInterval(() => {
        if (this.nc.isClosed()) return;
        const h = headers();
        h.set(H.ctl, 'ping');
        for (const r of replies) this.nc.publish(r, new Uint8Array(), { headers: h });
      }, every);
      timer.unref();
      this.beats.set(every, (b = { timer, replies }));
    }
    return b.replies;
  }

  private unbeat(every: number, reply: string): void {
    const b = this.beats.get(every);
    if (!b) return;
    b.replies.delete(reply);
    if (b.replies.size === 0) {
      clearInterval(b.timer);
      this.beats.delete(every);
    }
  }

  private status(what: string, err: unknown): [number, string] {
    const e = toBerthError(err);
    // an error that is not one of ours is a bug or an unexpected failure: say where
    if (!(err instanceof BerthError)) console.error(`${this.opts.name}: ${what}:`, err);
    return [e.code, headerText(e.message)];
  }

  /** Serves every method of a containerd gRPC service that `handlers` implements. */
  serveGrpc(info: ServiceInfo, handlers: GrpcHandlers): void {
    for (const m of info.methods) {
      const h = handlers[m.name];
      if (!h) continue;
      if (!m.requestStream && !m.responseStream) this.unary(m, h as UnaryHandler);
      else if (!m.requestStream) this.serverStream(m, h as ServerStreamHandler);
      else this.bidi(m, h as BidiHandler);
    }
  }

  unary(m: MethodInfo, handler: UnaryHandler): void {
    const req = codec(m.requestType);
    const res = codec(m.responseType);
    this.raw(m.name, async (data, ctx) => res.encode(await handler(decodeMessage(req, data), ctx)), { grpc: m.path });
  }

  serverStream(m: MethodInfo, handler: ServerStreamHandler): void {
    const req = codec(m.requestType);
    const res = codec(m.responseType);
    // a handler may send bytes it already has in wire form (events relay envelopes untouched)
    this.stream(m, (ch, data, ctx) => handler(decodeMessage(req, data), ctx, (r) => ch.send(r instanceof Uint8Array ? r : res.encode(r))));
  }

  bidi(m: MethodInfo, handler: BidiHandler): void {
    const req = codec(m.requestType);
    const res = codec(m.responseType);
    this.stream(m, (ch, _data, ctx) =>
      handler(ctx, {
        recv: async function* () {
          for await (const b of ch) yield decodeMessage(req, b);
        },
        send: (r) => ch.send(res.encode(r)),
      }),
    );
  }

  /** A stream endpoint answers the opening request with its own inbox, then talks on the channel. */
  private stream(m: MethodInfo, run: (ch: Channel, first: Uint8Array, ctx: StreamContext) => Promise<void>): void {
    this.endpoint(
      m.name,
      (msg) => {
        const peer = msg.headers?.get(H.inbox);
        if (!peer) {
          msg.respondError(Code.InvalidArgument, `${m.path} is a streaming method: open it as a stream`);
          return;
        }
        const max = this.opts.maxStreams ?? defaultMaxStreams;
        if (this.channels.size >= max) {
          msg.respondError(Code.ResourceExhausted, `${m.path}: ${this.opts.name} serves ${max} streams at most`);
          return;
        }
        const ch = new Channel(this.nc, { what: m.path, ...this.opts.channel });
        ch.connect(peer, msg.headers!.get(H.window), msg.headers!.get(H.liveness), msg.headers!.get(H.batch));
        this.channels.add(ch);
        ch.onClose = () => this.channels.delete(ch);
        const h = headers();
        h.set(H.inbox, ch.inbox);
        h.set(H.window, String(ch.opts.window));
        h.set(H.liveness, String(ch.opts.heartbeat));
        h.set(H.batch, '1');
        msg.respond(new Uint8Array(), { headers: h });
        const ctx: StreamContext = { ...contextFrom(msg.headers), signal: ch.signal };
        run(ch, msg.data, ctx).then(
          () => ch.finish(),
          (err) => ch.finish(toBerthError(err).code === Code.Unknown ? new BerthError(...this.status(m.path, err) as [Code, string]) : err),
        );
      },
      { grpc: m.path, stream: m.requestStream ? 'bidi' : 'server' },
    );
  }

  async stop(): Promise<void> {
    for (const ch of this.channels) ch.cancel(new BerthError(Code.Unavailable, `${this.opts.name}: shutting down`));
    this.cancels.unsubscribe();
    await this.svc.stop();
  }
}
