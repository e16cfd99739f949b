// LeanServerStream on a real node:http2 server, read by grpc-js's client: what the client sees
// must be what grpc-js's own server would have sent (messages, the status before or after them,
// the deadline), and the handler must hear of a client that goes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LeanServerStream } from './leanstream.js';

type Handler = (call: LeanServerStream) => void;

const dir = mkdtempSync(join(tmpdir(), 'berth-leanstream-'));
const sock = join(dir, 's.sock');
let server: http2.Http2Server;
const handlers = new Map<string, Handler>();

before(async () => {
  server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const handler = handlers.get(headers[':path'] as string)!;
    const timeout = headers['grpc-timeout'] as string | undefined;
    const deadline = timeout ? Date.now() + Number(/^(\d+)m$/.exec(timeout)?.[1] ?? 0) : undefined;
    stream.resume();
    stream.once('end', () => handler(new LeanServerStream(Buffer.alloc(0), stream, headers, deadline, 1 << 20)));
  });
  await new Promise<void>((r) => server.listen(sock, r));
});
after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

const id = (b: Buffer) => b;

/** The messages a server-streaming call got, and how it ended. */
function call(path: string, opts: grpc.CallOptions = {}, onFirst?: (c: grpc.ClientReadableStream<Buffer>) => void): Promise<{ messages: string[]; code: number; details: string }> {
  const client = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
  const messages: string[] = [];
  return new Promise((resolve) => {
    const c = client.makeServerStreamRequest(path, id, id, Buffer.alloc(0), new grpc.Metadata(), opts);
    c.on('data', (b: Buffer) => {
      messages.push(b.toString());
      if (messages.length === 1) onFirst?.(c);
    });
    c.on('error', () => undefined);
    c.on('status', (s) => {
      client.close();
      resolve({ messages, code: s.code, details: s.details });
    });
  });
}

test('messages in order, then OK', async () => {
  handlers.set('/t/ok', (c) => {
    c.write(Buffer.from('one'));
    c.write(Buffer.from('two'), () => c.end());
  });
  assert.deepEqual(await call('/t/ok'), { messages: ['one', 'two'], code: grpc.status.OK, details: 'OK' });
});

test('a status before any message (trailers only) and after some (in the trailers)', async () => {
  handlers.set('/t/early', (c) => c.emit('error', { code: grpc.status.NOT_FOUND, details: 'no such blob: sha256:ab' }));
  assert.deepEqual(await call('/t/early'), { messages: [], code: grpc.status.NOT_FOUND, details: 'no such blob: sha256:ab' });
  handlers.set('/t/late', (c) => {
    c.write(Buffer.from('part'));
    c.emit('error', { code: grpc.status.UNAVAILABLE, details: 'content went away' });
  });
  assert.deepEqual(await call('/t/late'), { messages: ['part'], code: grpc.status.UNAVAILABLE, details: 'content went away' });
});

test('the deadline passing mid-stream: DEADLINE_EXCEEDED, and the handler is told to stop', async () => {
  let stopped!: () => void;
  const told = new Promise<void>((r) => (stopped = r));
  handlers.set('/t/slow', (c) => {
    c.write(Buffer.from('first'));
    c.once('cancelled', () => stopped());
  });
  const got = await call('/t/slow', { deadline: Date.now() + 300 });
  assert.equal(got.code, grpc.status.DEADLINE_EXCEEDED);
  await told;
});

test('a client that cancels: the handler hears it, and writes after it say so', async () => {
  let call1!: LeanServerStream;
  const cancelled = new Promise<void>((r) =>
    handlers.set('/t/cancel', (c) => {
      call1 = c;
      c.write(Buffer.from('hello'));
      c.once('cancelled', () => r());
    }),
  );
  const got = await call('/t/cancel', {}, (c) => c.cancel());
  assert.equal(got.code, grpc.status.CANCELLED);
  await cancelled;
  assert.equal(call1.cancelled, true);
  assert.equal(call1.write(Buffer.from('after')), false);
});

test('a message over the send limit: RESOURCE_EXHAUSTED, as grpc-js words it', async () => {
  handlers.set('/t/big', (c) => c.write(Buffer.alloc((1 << 20) + 1)));
  const got = await call('/t/big');
  assert.equal(got.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(got.details, /^Sent message larger than max/);
});
