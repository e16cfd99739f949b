// Forwarding a gRPC call to the bus without decoding it: the request bytes go out as they came,
// the reply bytes come back as they are. Metadata becomes headers, the deadline goes along,
// errors come back as the same status code, and a stream moves only as fast as its reader.
import * as grpc from '@grpc/grpc-js';
import type { Msg } from '@nats-io/nats-core';
import type { MethodInfo } from '@berth/api';
import { BusClient, type CallContext, type Channel, type OnCancel } from '@berth/bus';
import { BerthError, Code, toBerthError } from '@berth/errdefs';
import type { Route } from './lean.js';
import { Outflow } from './outflow.js';

const bytes = (b: Buffer) => b;
const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

export function passthrough(m: MethodInfo): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path: m.path,
    requestStream: m.requestStream,
    responseStream: m.responseStream,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  };
}

export function status(err: unknown): Partial<grpc.StatusObject> {
  const e = toBerthError(err);
  return { code: e.code as number as grpc.status, details: e.message };
}

/**
 * The call's context from its metadata, read by `one` (grpc-js's Metadata here, the raw HTTP/2
 * headers in lean.ts): what containerd carries in its context, the deadline aside.
 */
export function metadataContext(one: (key: string) => string | undefined): CallContext {
  const ctx: CallContext = {};
  const namespace = one('containerd-namespace');
  if (namespace) ctx.namespace = namespace;
  const lease = one('containerd-lease');
  if (lease) ctx.lease = lease;
  const tp = one('traceparent');
  if (tp) ctx.traceparent = tp;
  const ts = one('tracestate');
  if (ts) ctx.tracestate = ts;
  return ctx;
}

export function callContext(call: { metadata: grpc.Metadata; getDeadline(): grpc.Deadline }): CallContext {
  const ctx = metadataContext((k) => {
    const v = call.metadata.get(k)[0];
    return v === undefined ? undefined : String(v);
  });
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  if (Number.isFinite(ms)) ctx.deadline = ms;
  return ctx;
}

/**
 * The reason every client cancel gives. grpc-js reports each closed stream as cancelled, the
 * finished ones too, so an error made per cancel cost a stack capture on every call.
 */
export const clientCanceled = new BerthError(Code.Canceled, 'context canceled');

type Cancellable = { metadata: grpc.Metadata; getDeadline(): grpc.Deadline; once(ev: 'cancelled', f: () => void): unknown; removeListener(ev: 'cancelled', f: () => void): unknown };

/**
 * The call's context with a signal that fires when the gRPC client cancels (or its connection
 * goes): the bus then cancels the call at the service too. Listening starts before the call
 * goes out, so a cancel during a stream's handshake is not missed; `done` stops listening once
 * the call is answered.
 */
function cancellable(call: Cancellable): { ctx: CallContext; done(): void } {
  const ac = new AbortController();
  const onCancel = () => ac.abort(clientCanceled);
  call.once('cancelled', onCancel);
  return { ctx: { ...callContext(call), signal: ac.signal }, done: () => void call.removeListener('cancelled', onCancel) };
}

/** Writes the channel's messages to the gRPC call, waiting when the client reads slowly. */
async function pump(ch: Channel, call: grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>): Promise<void> {
  // what waits here is bounded (outflow.ts); the channel's window bounds what waits before it
  const out = new Outflow(call, 16, 2 << 20);
  try {
    for await (const m of ch) {
      if (!(await out.room()) || !out.write(asBuffer(m))) {
        ch.cancel(clientCanceled);
        return;
      }
    }
    call.end();
  } catch (err) {
    call.emit('error', status(err));
  }
}

// BERTH_GATEWAY_TRACE=1: one log line per forwarded call (method, ms from arrival to answer or
// stream end, bytes each way), to see where a client's time goes
const tracing = !!process.env.BERTH_GATEWAY_TRACE;
function trace(m: MethodInfo, t0: number, inBytes: number, outBytes: number, err?: unknown): void {
  const e = err === undefined ? '' : ` code=${toBerthError(err).code}`;
  console.log(`trace ${m.path} ${(performance.now() - t0).toFixed(2)} ms in=${inBytes} out=${outBytes}${e} at=${(performance.timeOrigin + t0).toFixed(1)}`);
}

type UnaryCall = grpc.ServerUnaryCall<Buffer, Buffer> & { cancelled: boolean };

/**
 * Tells the bus when the gRPC client cancels a unary call (or its connection goes), without an
 * AbortController and its EventTarget per call: the forwarder's share of a call's time.
 */
const onClientCancel =
  (call: UnaryCall): OnCancel =>
  (abort) => {
    if (call.cancelled) {
      abort(clientCanceled);
      return () => undefined;
    }
    const f = () => abort(clientCanceled);
    call.once('cancelled', f);
    return () => void call.removeListener('cancelled', f);
  };

/**
 * A forwarded unary call as lean.ts serves it: the request's bytes to the bus, its reply back.
 * `onReply` sees the reply as it arrives (readcache.ts).
 */
export type Forward = (body: Buffer, ctx: CallContext, onCancel: OnCancel, onReply?: (msg: Msg) => void) => Promise<Uint8Array>;

export function unaryRoute(bus: BusClient, m: MethodInfo, subject: string): Forward {
  if (!tracing) return (body, ctx, onCancel, onReply) => bus.unary(subject, body, ctx, { onCancel, onReply });
  return (body, ctx, onCancel, onReply) => {
    const t0 = performance.now();
    return bus.unary(subject, body, ctx, { onCancel, onReply }).then(
      (r) => (trace(m, t0, body.length, r.length), r),
      (e) => {
        trace(m, t0, body.length, 0, e);
        throw e;
      },
    );
  };
}

/** `unary`: the route lean.ts serves the method by, when there is one (the same for grpc-js's calls). */
export function forwarder(bus: BusClient, m: MethodInfo, subject: string, unary?: Route): grpc.UntypedHandleCall {
  if (!m.requestStream && !m.responseStream) {
    // the calls lean.ts does not take (a compressed one, or all with BERTH_GATEWAY_LEAN=0)
    const route = unary ?? unaryRoute(bus, m, subject);
    return ((call: UnaryCall, cb: grpc.sendUnaryData<Buffer>) => {
      route(call.request, callContext(call), onClientCancel(call)).then(
        (r) => cb(null, asBuffer(r)),
        (e) => cb(status(e)),
      );
    }) as grpc.handleUnaryCall<Buffer, Buffer>;
  }
  if (!m.requestStream) {
    return (async (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const t0 = performance.now();
      const c = cancellable(call);
      let ch: Channel;
      try {
        ch = await bus.open(subject, 'server', call.request, c.ctx);
      } catch (err) {
        c.done();
        if (tracing) trace(m, t0, call.request.length, 0, err);
        call.emit('error', status(err));
        return;
      }
      if (tracing) console.log(`trace ${m.path} open ${(performance.now() - t0).toFixed(2)} ms`);
      await pump(ch, call);
      c.done();
      if (tracing) trace(m, t0, call.request.length, -1);
    }) as grpc.handleServerStreamingCall<Buffer, Buffer>;
  }
  // client streaming is carried as bidi (containerd 1.6 has none, but the bus would take it)
  return (async (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    call.pause();
    const c = cancellable(call);
    let ch: Channel;
    try {
      ch = await bus.open(subject, 'bidi', undefined, c.ctx);
    } catch (err) {
      c.done();
      call.emit('error', status(err));
      return;
    }
    call.on('data', (b: Buffer) => {
      call.pause();
      ch.send(b).then(
        () => call.resume(),
        () => undefined, // the channel failed: pump() reports the status
      );
    });
    call.on('end', () => ch.end());
    call.resume();
    await pump(ch, call);
    c.done();
  }) as grpc.handleBidiStreamingCall<Buffer, Buffer>;
}
