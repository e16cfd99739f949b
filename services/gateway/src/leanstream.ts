// A server-streaming call answered on node:http2 directly, shaped as the part of grpc-js's
// ServerWritableStream that the gateway's stream handlers use (contentread.ts, the forwarder's
// pump): the request, its metadata and deadline, write with a callback once the message went,
// end, a status through emit('error'), and 'cancelled'. Content.Read is ten of the forty-odd
// calls of a `ctr run` (the image's index, manifest and config, each a few times), and grpc-js's
// per-call machinery was most of what such a Read cost. lean.ts reads the request and hands the
// call here.
import { EventEmitter } from 'node:events';
import type * as http2 from 'node:http2';
import { Code } from '@berth/errdefs';
import { okHeaders, okTrailers, sendStatus } from './h2answer.js';

export class LeanServerStream extends EventEmitter {
  cancelled = false;
  /** an answer (end or a status) is on its way: nothing more is written */
  private ended = false;
  private trailers: Record<string, string> = okTrailers;
  private timer: NodeJS.Timeout | undefined;
  readonly metadata: { get(key: string): string[] };

  constructor(
    readonly request: Buffer,
    private readonly stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    private readonly deadline: number | undefined,
    private readonly maxSend: number,
  ) {
    super();
    this.metadata = {
      get: (k) => {
        const v = headers[k];
        return v === undefined ? [] : Array.isArray(v) ? v : [String(v)];
      },
    };
    // the client went (a reset, a closed connection) before the answer: the handler stops
    stream.once('close', () => {
      if (!this.ended) this.cancel();
    });
    if (deadline !== undefined) {
      this.timer = setTimeout(() => {
        this.cancel();
        this.fail(Code.DeadlineExceeded, 'Deadline exceeded');
      }, Math.max(0, deadline - Date.now()));
    }
  }

  getDeadline(): number {
    return this.deadline ?? Infinity;
  }

  private cancel(): void {
    clearTimeout(this.timer);
    if (this.cancelled) return;
    this.cancelled = true;
    super.emit('cancelled', 'cancelled');
  }

  /** The response's headers, once, before the first message or the end. */
  private open(): void {
    if (this.stream.headersSent) return;
    this.stream.respond(okHeaders, { waitForTrailers: true });
    this.stream.once('wantTrailers', () => this.stream.sendTrailers(this.trailers));
  }

  /** One message; `cb` once it went to the socket. false: wait before the next (or the call is over). */
  write(msg: Buffer, cb?: (err?: Error | null) => void): boolean {
    if (this.ended || this.stream.destroyed) return false;
    if (msg.length > this.maxSend) {
      this.fail(Code.ResourceExhausted, `Sent message larger than max (${msg.length + 5} vs. ${this.maxSend})`);
      return false;
    }
    this.open();
    const prefix = Buffer.allocUnsafe(5);
    prefix[0] = 0;
    prefix.writeUInt32BE(msg.length, 1);
    // one writev, so prefix and message leave together without copying the message
    this.stream.cork();
    this.stream.write(prefix);
    const room = this.stream.write(msg, cb);
    this.stream.uncork();
    return room;
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    if (this.stream.destroyed) return;
    this.open();
    this.stream.end();
  }

  /** Ends the call with a status: trailers-only before any message, else in the trailers. */
  private fail(code: number, message: string): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    if (this.stream.destroyed) return;
    if (!this.stream.headersSent) return sendStatus(this.stream, code, message);
    this.trailers = { 'grpc-status': String(code), 'grpc-message': encodeURI(message) };
    this.stream.end();
  }

  /** grpc-js's way to end a call with a status: emit('error', { code, details }). */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event !== 'error') return super.emit(event, ...args);
    const s = (args[0] ?? {}) as { code?: number; details?: string };
    this.fail(s.code ?? Code.Unknown, s.details ?? '');
    return true;
  }
}
