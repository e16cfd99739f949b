// A gRPC server-streaming call straight over Node's built-in HTTP/2, for the commands whose
// time is their start (`berth pull`): grpc-js and its channel machinery cost a short command
// about as much CPU as node's own start on this machine. Speaks what grpc-js's server expects:
// POST with `content-type: application/grpc` and `te: trailers`, length-prefixed messages, the
// status in the trailers (or in the headers of a trailers-only answer).
import { connect, constants } from 'node:http2';
import { connect as netConnect } from 'node:net';

/** A call that ended with a status other than OK: the server's message, its code. */
export class GrpcStatusError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

// grpc-message is percent-encoded (the gRPC HTTP/2 protocol); a malformed one is shown as sent
function statusMessage(v: unknown): string {
  const s = String(v ?? '');
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export interface StreamCall {
  /** resolves at an OK status, rejects with GrpcStatusError (or the connection's error) otherwise */
  done: Promise<void>;
  cancel(): void;
}

/**
 * Calls the server-streaming method `path` on the unix socket `address` with one request
 * message; `each` gets every response message's bytes, in order.
 */
export function serverStream(address: string, path: string, request: Uint8Array, metadata: Record<string, string>, each: (msg: Buffer) => void): StreamCall {
  const session = connect('http://localhost', { createConnection: () => netConnect(address) });
  const req = session.request({
    [constants.HTTP2_HEADER_METHOD]: 'POST',
    [constants.HTTP2_HEADER_PATH]: path,
    [constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
    te: 'trailers',
    ...metadata,
  });
  const frame = Buffer.alloc(5 + request.length);
  frame.writeUInt32BE(request.length, 1);
  frame.set(request, 5);
  req.end(frame);

  const done = new Promise<void>((resolve, reject) => {
    let pending: Buffer = Buffer.alloc(0);
    let settled = false;
    let status: { code: number; message: string } | undefined;
    const settle = (e?: Error) => {
      if (settled) return;
      settled = true;
      session.close();
      if (e) reject(e);
      else if (!status) reject(new GrpcStatusError(13, 'server closed the stream without sending trailers'));
      else if (status.code !== 0) reject(new GrpcStatusError(status.code, status.message));
      else resolve();
    };
    const take = (h: Record<string, unknown>) => {
      if (h['grpc-status'] !== undefined) status = { code: Number(h['grpc-status']), message: statusMessage(h['grpc-message']) };
    };
    req.on('response', (h) => {
      const st = Number(h[constants.HTTP2_HEADER_STATUS]);
      if (st !== 200) status = { code: 14, message: `received HTTP status ${st}` };
      take(h);
    });
    req.on('trailers', take);
    req.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 5) {
        const n = pending.readUInt32BE(1);
        if (pending.length < 5 + n) break;
        each(pending.subarray(5, 5 + n));
        pending = pending.subarray(5 + n);
      }
    });
    req.on('end', () => settle());
    // closed without its end: cancelled here, or reset by the server
    req.on('close', () => settle(status ? undefined : new GrpcStatusError(1, 'context canceled')));
    req.on('error', (e) => settle(e));
    session.on('error', (e) => settle(e));
  });
  done.catch(() => undefined);
  return {
    done,
    cancel: () => req.close(constants.NGHTTP2_CANCEL),
  };
}
