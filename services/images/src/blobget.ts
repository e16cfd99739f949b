// A blob's GET read straight off its socket. node:http hands a body over in the socket's 64 KiB
// reads, each a new buffer through its parser and a Readable: for a 40 MiB layer that is ~650
// chunks and 100-130 ms of CPU (measured), on the same two cores that unpack the pull. Here the
// kernel reads into 1 MiB buffers that go to the caller as they are (no copy, no parser on the
// body): ~55 ms for the same layer. Only the framing a registry's blob answer has is read here
// (Content-Length, or the body to the connection's close); a chunked answer is left to node:http
// (NotLean), as is everything that is not a blob GET.
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** A response whose body framing this reader leaves to node:http: ask again there. */
export class NotLean extends Error {}

export interface LeanReply {
  status: number;
  ok: boolean;
  header(name: string): string | null;
  /** the body in chunks of up to 1 MiB; read once */
  body: AsyncIterable<Buffer>;
  discard(): Promise<void>;
}

const chunk = 1 << 20;
// a buffer with less room than this goes to the caller and a new one takes the reads, so a read
// is never a sliver
const minRead = 64 << 10;
const maxHead = 64 << 10;
// buffers read ahead of the caller before the socket stops reading
const ahead = 4;

// Buffers callers gave back once they wrote them (`recycle`), taken again for the next reads: a
// pull's 200 MB in fresh buffers is 200 MB of external memory, which V8 answers with a
// mark-compact every few tens of MB (measured: 9 in one pull, 10-60 ms each).
const spare: Buffer[] = [];
const maxSpare = 16;

/**
 * Gives a chunk of a body back for reuse once the caller is done with its bytes (and keeps no
 * view of them). Chunks this module did not hand out are ignored.
 */
export function recycle(b: Buffer): void {
  if (b.buffer.byteLength !== chunk || spare.length >= maxSpare || !ours.has(b.buffer)) return;
  if (spare.some((s) => s.buffer === b.buffer)) return;
  spare.push(Buffer.from(b.buffer, 0, chunk));
}
const ours = new WeakSet<ArrayBufferLike>();
// what a socket reads into once its body went out whole or broke: the buffers given out are the caller's
const sink = Buffer.allocUnsafeSlow(minRead);
function take1MiB(): Buffer {
  const b = spare.pop();
  if (b) return b;
  const f = Buffer.allocUnsafeSlow(chunk);
  ours.add(f.buffer);
  return f;
}

/**
 * GETs `u` over a connection of its own (closed after the body): the status and headers once
 * they are in, the body as it comes. A connection that ends before Content-Length's bytes is an
 * error from the body, so the caller resumes with a Range from what it has.
 */
export function leanGet(u: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<LeanReply> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    let head = `GET ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\nconnection: close\r\n`;
    for (const [k, v] of Object.entries(headers)) {
      if (/[\r\n]/.test(k) || /[\r\n]/.test(v)) return reject(new Error(`header ${k}: line break in a header`));
      head += `${k}: ${v}\r\n`;
    }
    head += '\r\n';

    let buf = take1MiB();
    let start = 0; // where the body begins in buf
    let wn = 0; // bytes in buf
    let answered = false;
    let remaining = -1; // body bytes still to come; -1: to the connection's close
    const queue: Buffer[] = [];
    let ended = false;
    let failure: Error | undefined;
    let wake: (() => void) | null = null;
    let paused = false;
    const poke = () => {
      wake?.();
      wake = null;
    };

    const fresh = () => {
      buf = take1MiB();
      start = wn = 0;
    };
    const push = (b: Buffer) => {
      if (b.length) queue.push(b);
      if (queue.length >= ahead && !paused) {
        paused = true;
        sock.pause();
      }
      poke();
    };
    /** The body bytes in buf go out when the body is whole or buf has little room left. */
    const body = () => {
      const have = wn - start;
      if (remaining >= 0 && have >= remaining) {
        push(buf.subarray(start, start + remaining));
        remaining = 0;
        ended = true;
        buf = sink;
        start = wn = 0;
        sock.destroy();
        return;
      }
      if (buf.length - wn < minRead) {
        push(buf.subarray(start, wn));
        if (remaining > 0) remaining -= have;
        fresh();
      }
    };
    /** The status line and headers, once they are all in buf (1xx answers skipped). */
    const parseHead = () => {
      for (;;) {
        const end = buf.subarray(0, wn).indexOf('\r\n\r\n', 0, 'latin1');
        if (end < 0) {
          if (wn >= maxHead) sock.destroy(new Error('response head larger than 64 KiB'));
          return;
        }
        const lines = buf.toString('latin1', 0, end).split('\r\n');
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
        if (!m) {
          sock.destroy(new Error(`not an HTTP/1.1 response: ${JSON.stringify((lines[0] ?? '').slice(0, 40))}`));
          return;
        }
        const status = Number(m[1]);
        if (status >= 100 && status < 200) {
          buf.copy(buf, 0, end + 4, wn);
          wn -= end + 4;
          continue;
        }
        const h = new Map<string, string>();
        for (const line of lines.slice(1)) {
          const i = line.indexOf(':');
          if (i <= 0) continue;
          const k = line.slice(0, i).trim().toLowerCase();
          const v = line.slice(i + 1).trim();
          h.set(k, h.has(k) ? `${h.get(k)}, ${v}` : v);
        }
        const ok = status >= 200 && status < 300;
        const te = h.get('transfer-encoding');
        if (ok && te !== undefined && te.toLowerCase() !== 'identity') {
          sock.destroy(new NotLean(`transfer-encoding ${te}`));
          return;
        }
        const cl = h.get('content-length');
        if (cl !== undefined) {
          if (!/^\d+$/.test(cl)) {
            sock.destroy(new Error(`bad content-length ${JSON.stringify(cl)}`));
            return;
          }
          remaining = Number(cl);
        }
        if (status === 204 || status === 304) remaining = 0;
        answered = true;
        start = end + 4;
        resolve({ status, ok, header: (n) => h.get(n.toLowerCase()) ?? null, body: read(), discard: async () => void sock.destroy() });
        body();
        return;
      }
    };
    const take = (n: number, b: Buffer) => {
      // the reads land in buf itself; a socket that read into a buffer of its own is copied
      if (b.buffer !== buf.buffer || b.byteOffset !== buf.byteOffset + wn) {
        let from = b.subarray(0, n);
        while (from.length) {
          const k = from.copy(buf, wn);
          from = from.subarray(k);
          wn += k;
          if (answered) body();
          else parseHead();
          if (ended || sock.destroyed) return true;
        }
        return true;
      }
      wn += n;
      if (answered) body();
      else parseHead();
      return true;
    };

    async function* read(): AsyncGenerator<Buffer> {
      try {
        for (;;) {
          const b = queue.shift();
          if (b) {
            if (paused && queue.length < ahead && !ended) {
              paused = false;
              sock.resume();
            }
            yield b;
            continue;
          }
          if (failure) throw failure;
          if (ended) return;
          await new Promise<void>((r) => (wake = r));
        }
      } finally {
        if (!ended) sock.destroy();
      }
    }

    const opts = { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port) || (u.protocol === 'https:' ? 443 : 80), onread: { buffer: () => buf.subarray(wn), callback: take } };
    const sock: Socket =
      u.protocol === 'https:'
        ? tlsConnect({ ...opts, servername: isIP(opts.host) ? undefined : opts.host, ALPNProtocols: ['http/1.1'] }, () => sock.write(head))
        : netConnect(opts, () => sock.write(head));
    const onAbort = () => sock.destroy(signal!.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });
    /** The connection ended or broke: what was read goes to the caller before the error, to resume after. */
    const stop = (e?: Error) => {
      if (!answered || ended || failure) return;
      const have = wn - start;
      push(buf.subarray(start, wn));
      if (remaining > 0) remaining -= have;
      buf = sink;
      start = wn = 0;
      if (e) failure = e;
      else if (remaining > 0) failure = new Error(`connection closed with ${remaining} bytes of the body still to come`);
      else ended = true;
    };
    sock.on('end', () => {
      stop();
      poke();
    });
    sock.on('error', (e) => {
      if (!answered) reject(e);
      stop(e);
      poke();
    });
    sock.on('close', () => {
      signal?.removeEventListener('abort', onAbort);
      if (!answered) reject(new Error('connection closed before a response'));
      stop(new Error('connection closed before the end of the body'));
      poke();
    });
  });
}
