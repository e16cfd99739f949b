// Forwarded unary calls answered on node:http2 directly, beside grpc-js. A unary call forwarded
// to the bus needs nothing of grpc-js's server call: no interceptors, no Metadata object, no
// message queue, no decoding. Measured with bench/unary.mjs, the gateway spent 240 µs of CPU per
// forwarded call against 94 µs for node:http2 answering alone; most of the difference was grpc-js's
// per-call machinery. Here a call costs node:http2's stream, one buffer and the bus request.
//
// grpc-js keeps everything else: streams, the gateway's own services, health, and any call this
// path does not take (a compressed request, a content type that is not gRPC): those go to its
// handler unchanged. What a client sees is what grpc-js would have answered: the same headers,
// trailers-only errors, RESOURCE_EXHAUSTED past the receive limit, DEADLINE_EXCEEDED at the
// grpc-timeout, a cancel (RST_STREAM, a closed connection) passed to the bus.
import * as http2 from 'node:http2';
import type * as grpc from '@grpc/grpc-js';
import type { CallContext, OnCancel } from '@berth/bus';
import { BerthError, Code, toBerthError } from '@berth/errdefs';
import { clientCanceled, metadataContext } from './forward.js';

/** Serves one call on its stream; `ctx` holds the client's metadata and deadline. */
export type Route = (body: Buffer, ctx: CallContext, onCancel: OnCancel) => Promise<Uint8Array>;

export interface Limits {
  maxRecv: number;
  maxSend: number;
}

const okHeaders = {
  [http2.constants.HTTP2_HEADER_STATUS]: 200,
  [http2.constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
};
const okTrailers = { 'grpc-status': '0', 'grpc-message': 'OK' };

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

function sendStatus(stream: http2.ServerHttp2Stream, code: number, details: string): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond({ ...okHeaders, 'grpc-status': String(code), 'grpc-message': encodeURI(details) }, { endStream: true });
}

function sendMessage(stream: http2.ServerHttp2Stream, body: Uint8Array): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  // one DATA frame: the 5-byte gRPC prefix and the message together
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  stream.respond(okHeaders, { waitForTrailers: true });
  stream.once('wantTrailers', () => stream.sendTrailers(okTrailers));
  stream.end(frame);
}

/** Runs a unary route on an HTTP/2 stream: reads the one message, answers with one or a status. */
function serveUnary(path: string, route: Route, limits: Limits, stream: http2.ServerHttp2Stream, headers: Http2Headers): void {
  stream.once('error', () => undefined); // a reset stream: its 'close' says so
  const ctx = contextOf(headers);
  const timeout = timeoutOf(headers);
  if (Number.isNaN(timeout)) return sendStatus(stream, Code.Internal, `Invalid grpc-timeout value "${first(headers['grpc-timeout'])}"`);
  let answered = false;
  let deadline: NodeJS.Timeout | undefined;
  let abort: ((reason?: unknown) => void) | undefined;
  const finish = (send: () => void) => {
    if (answered) return;
    answered = true;
    clearTimeout(deadline);
    send();
  };
  if (timeout !== undefined) {
    ctx.deadline = Date.now() + timeout;
    deadline = setTimeout(() => {
      abort?.(new BerthError(Code.DeadlineExceeded, 'context deadline exceeded'));
      finish(() => sendStatus(stream, Code.DeadlineExceeded, 'Deadline exceeded'));
    }, timeout);
  }
  // the client went away before its answer: the bus tells the service to stop
  stream.once('close', () => {
    if (answered) return;
    answered = true;
    clearTimeout(deadline);
    abort?.(clientCanceled);
  });
  const chunks: Buffer[] = [];
  let received = 0;
  stream.on('data', (b: Buffer) => {
    if (answered) return;
    received += b.length;
    // the length prefix tells the size before the message is in: refuse it then, as grpc-js does
    chunks.push(b);
    const head = chunks.length === 1 ? b : received >= 5 ? Buffer.concat(chunks, 5) : b;
    const declared = head.length >= 5 ? head.readUInt32BE(1) : 0;
    if (declared > limits.maxRecv || received > limits.maxRecv + 5) {
      chunks.length = 0;
      return finish(() => sendStatus(stream, Code.ResourceExhausted, `Received message larger than max (${Math.max(declared, received - 5)} vs ${limits.maxRecv})`));
    }
  });
  stream.once('end', () => {
    if (answered) return;
    const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
    // a message cut short is none at all, as grpc-js's decoder sees it
    if (all.length < 5 || all.length < 5 + all.readUInt32BE(1)) return finish(() => sendStatus(stream, Code.Unimplemented, `Received no request message for unary method ${path}`));
    if (all[0] !== 0) return finish(() => sendStatus(stream, Code.Internal, 'Compressed message without grpc-encoding'));
    const size = all.readUInt32BE(1);
    if (all.length > 5 + size) return finish(() => sendStatus(stream, Code.Unimplemented, `Received a second request message for unary method ${path}`));
    const onCancel: OnCancel = (a) => {
      abort = a;
      return () => (abort = undefined);
    };
    route(all.subarray(5), ctx, onCancel).then(
      (r) =>
        finish(() =>
          r.length > limits.maxSend ? sendStatus(stream, Code.ResourceExhausted, `Sent message larger than max (${r.length + 5} vs. ${limits.maxSend})`) : sendMessage(stream, r),
        ),
      (e) =>
        finish(() => {
          const err = toBerthError(e);
          sendStatus(stream, err.code, err.message);
        }),
    );
  });
}

/**
 * Takes the unary calls of `routes` (by method path) off `server`'s HTTP/2 servers, bound
 * already; every other stream goes to grpc-js's own handler as before. Returns false when
 * grpc-js's servers are not where this looks (its internals moved): then grpc-js serves every
 * call, as without this, and a test notices.
 */
export function takeUnaryRoutes(server: grpc.Server, routes: Map<string, Route>, limits: Limits): boolean {
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
      if (!route || notPlain(headers)) return grpcHandler.call(s, stream, headers, ...rest);
      // grpc-js counts a session's open streams for its idle timeout: these count too
      internals.onStreamOpened?.call(server, stream);
      serveUnary(path, route, limits, stream, headers);
    });
    taken = true;
  }
  return taken;
}
