// Forwarded unary calls answered on node:http2 directly, beside grpc-js. A unary call forwarded
// to the bus needs nothing of grpc-js's server call: no interceptors, no Metadata object, no
// message queue, no decoding. Measured with bench/unary.mjs, the gateway spent 240 µs of CPU per
// forwarded call against 94 µs for node:http2 answering alone; most of the difference was grpc-js's
// per-call machinery. Here a call costs node:http2's stream, one buffer and the bus request.
//
// Content.Read, server-streaming, is taken too: its handler runs on a LeanServerStream
// (leanstream.ts) instead of grpc-js's call. grpc-js keeps everything else: other streams, the
// gateway's own services, health, and any call this path does not take (a compressed request, a
// content type that is not gRPC): those go to its handler unchanged. What a client sees is what grpc-js would have answered: the same headers,
// trailers-only errors, RESOURCE_EXHAUSTED past the receive limit, DEADLINE_EXCEEDED at the
// grpc-timeout, a cancel (RST_STREAM, a closed connection) passed to the bus.
import * as http2 from 'node:http2';
import type * as grpc from '@grpc/grpc-js';
import type { CallContext, OnCancel } from '@berth/bus';
import { BerthError, Code, toBerthError } from '@berth/errdefs';
import { clientCanceled, metadataContext } from './forward.js';
import { sendMessage, sendStatus } from './h2answer.js';
import { LeanServerStream } from './leanstream.js';

/** Serves one call on its stream; `ctx` holds the client's metadata and deadline. */
export type Route = (body: Buffer, ctx: CallContext, onCancel: OnCancel) => Promise<Uint8Array>;

export interface Limits {
  maxRecv: number;
  maxSend: number;
}

/** grpc-js's units of grpc-timeout */
const timeoutUnits: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

type Http2Headers = http2.IncomingHttpHeaders;

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/** Whether grpc-js must take the call: not gRPC (it answers 415) or a compressed request. */
function notPlain(h: Http2Headers): boolean {
  const type = h[http2.constants.HTTP2_HEADER_CONTENT_TYPE];
  if (typeof type !== 'string' || !type.startsWith('application/grpc')) return true;
  const enc = first(h['grpc-encoding']);
  return enc !== undefined && enc !== 'identity';
}

/** The call's context from its headers, as callContext() reads grpc-js's Metadata. */
export const contextOf = (h: Http2Headers): CallContext => metadataContext((k) => first(h[k]));

/** ms the grpc-timeout header gives; undefined when there is none, NaN when it is malformed. */
export function timeoutOf(h: Http2Headers): number | undefined {
  const v = first(h['grpc-timeout']);
  if (v === undefined) return undefined;
  const m = /(\d{1,8})\s*([HMSmun])/.exec(v);
  return m ? (Number(m[1]) * timeoutUnits[m[2]!]!) | 0 : NaN;
}

/**
 * Reads a call's one request message off its stream, with grpc-js's checks and words (the
 * receive limit, a message cut short or followed by another, a compressed one). `done` gets the
 * message; it is not called when the call was answered here (refused, or its deadline passed) or
 * the client went first. `call` holds what the caller needs to answer: whether it is answered,
 * the abort of its bus call, and `finish` (the one way to answer).
 */
function readRequest(path: string, limits: Limits, stream: http2.ServerHttp2Stream, headers: Http2Headers, kind: string, done: (body: Buffer, call: Answering) => void): void {
  stream.once('error', () => undefined); // a reset stream: its 'close' says so
  const timeout = timeoutOf(headers);
  if (Number.isNaN(timeout)) return sendStatus(stream, Code.Internal, `Invalid grpc-timeout value "${first(headers['grpc-timeout'])}"`);
  const call: Answering = { answered: false, deadline: undefined, finish: () => undefined };
  let timer: NodeJS.Timeout | undefined;
  call.finish = (send: () => void) => {
    if (call.answered) return;
    call.answered = true;
    clearTimeout(timer);
    send();
  };
  if (timeout !== undefined) {
    call.deadline = Date.now() + timeout;
    timer = setTimeout(() => {
      call.abort?.(new BerthError(Code.DeadlineExceeded, 'context deadline exceeded'));
      call.finish(() => sendStatus(stream, Code.DeadlineExceeded, 'Deadline exceeded'));
    }, timeout);
  }
  // the client went away before its answer: the bus tells the service to stop
  stream.once('close', () => {
    if (call.answered) return;
    call.answered = true;
    clearTimeout(timer);
    call.abort?.(clientCanceled);
  });
  const chunks: Buffer[] = [];
  let received = 0;
  stream.on('data', (b: Buffer) => {
    if (call.answered) return;
    received += b.length;
    // the length prefix tells the size before the message is in: refuse it then, as grpc-js does
    chunks.push(b);
    const head = chunks.length === 1 ? b : received >= 5 ? Buffer.concat(chunks, 5) : b;
    const declared = head.length >= 5 ? head.readUInt32BE(1) : 0;
    if (declared > limits.maxRecv || received > limits.maxRecv + 5) {
      chunks.length = 0;
      return call.finish(() => sendStatus(stream, Code.ResourceExhausted, `Received message larger than max (${Math.max(declared, received - 5)} vs ${limits.maxRecv})`));
    }
  });
  stream.once('end', () => {
    if (call.answered) return;
    const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
    // a message cut short is none at all, as grpc-js's decoder sees it
    if (all.length < 5 || all.length < 5 + all.readUInt32BE(1)) return call.finish(() => sendStatus(stream, Code.Unimplemented, `Received no request message for ${kind} method ${path}`));
    if (all[0] !== 0) return call.finish(() => sendStatus(stream, Code.Internal, 'Compressed message without grpc-encoding'));
    const size = all.readUInt32BE(1);
    if (all.length > 5 + size) return call.finish(() => sendStatus(stream, Code.Unimplemented, `Received a second request message for ${kind} method ${path}`));
    done(all.subarray(5), call);
  });
}

/** A call being answered: set once its answer (or status) is on its way. */
export interface Answering {
  answered: boolean;
  /** ms since the epoch, from grpc-timeout */
  deadline: number | undefined;
  /** stops the call's bus work (the client went, the deadline passed) */
  abort?: (reason?: unknown) => void;
  finish: (send: () => void) => void;
}

/** Runs a unary route on an HTTP/2 stream: reads the one message, answers with one or a status. */
function serveUnary(path: string, route: Route, limits: Limits, stream: http2.ServerHttp2Stream, headers: Http2Headers): void {
  readRequest(path, limits, stream, headers, 'unary', (body, call) => {
    const ctx = contextOf(headers);
    if (call.deadline !== undefined) ctx.deadline = call.deadline;
    const onCancel: OnCancel = (a) => {
      call.abort = a;
      return () => (call.abort = undefined);
    };
    route(body, ctx, onCancel).then(
      (r) =>
        call.finish(() =>
          r.length > limits.maxSend ? sendStatus(stream, Code.ResourceExhausted, `Sent message larger than max (${r.length + 5} vs. ${limits.maxSend})`) : sendMessage(stream, r),
        ),
      (e) =>
        call.finish(() => {
          const err = toBerthError(e);
          sendStatus(stream, err.code, err.message);
        }),
    );
  });
}

/** A server-streaming handler as grpc-js calls it, given a LeanServerStream in place of grpc-js's call. */
export type StreamHandler = (call: LeanServerStream) => void;

/**
 * Takes the unary calls of `routes` and the server-streaming calls of `streams` (by method path)
 * off `server`'s HTTP/2 servers, bound already; every other stream goes to grpc-js's own handler
 * as before. Returns false when grpc-js's servers are not where this looks (its internals
 * moved): then grpc-js serves every call, as without this, and a test notices.
 */
export function takeUnaryRoutes(server: grpc.Server, routes: Map<string, Route>, limits: Limits, streams = new Map<string, StreamHandler>()): boolean {
  const internals = server as unknown as { http2Servers?: unknown; onStreamOpened?: (s: http2.ServerHttp2Stream) => void };
  const servers = internals.http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  let taken = false;
  for (const s of servers.keys() as Iterable<http2.Http2Server>) {
    if (typeof s?.listeners !== 'function') continue;
    const theirs = s.listeners('stream') as Array<(...a: unknown[]) => void>;
    if (theirs.length !== 1) continue;
    const grpcHandler = theirs[0]!;
    s.removeListener('stream', grpcHandler);
    s.on('stream', (stream: http2.ServerHttp2Stream, headers: Http2Headers, ...rest: unknown[]) => {
      const path = headers[http2.constants.HTTP2_HEADER_PATH] as string;
      const route = routes.get(path);
      const streaming = route ? undefined : streams.get(path);
      if ((!route && !streaming) || notPlain(headers)) return grpcHandler.call(s, stream, headers, ...rest);
      // grpc-js counts a session's open streams for its idle timeout: these count too
      internals.onStreamOpened?.call(server, stream);
      if (route) return serveUnary(path, route, limits, stream, headers);
      readRequest(path, limits, stream, headers, 'server streaming', (body, call) => {
        call.finish(() => undefined); // the call answers from here on (its own deadline and close)
        streaming!(new LeanServerStream(body, stream, headers, call.deadline, limits.maxSend));
      });
    });
    taken = true;
  }
  return taken;
}
