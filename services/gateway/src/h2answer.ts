// A gRPC answer on a node:http2 stream as grpc-js words it: its headers, its one message, and a
// status (trailers-only when nothing was sent). lean.ts and leanstream.ts answer with these.
import * as http2 from 'node:http2';

export const okHeaders = {
  [http2.constants.HTTP2_HEADER_STATUS]: 200,
  [http2.constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
};
export const okTrailers = { 'grpc-status': '0', 'grpc-message': 'OK' };

export function sendStatus(stream: http2.ServerHttp2Stream, code: number, details: string): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond({ ...okHeaders, 'grpc-status': String(code), 'grpc-message': encodeURI(details) }, { endStream: true });
}

export function sendMessage(stream: http2.ServerHttp2Stream, body: Uint8Array): void {
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

