import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BerthError, Code, notFound } from '@berth/errdefs';
import { service } from '@berth/api';
import { TtrpcClient, TtrpcServer, serveService, serviceClient, type ServerContext } from './index.js';
import { Flags, FrameReader, MAX_MESSAGE_LENGTH, MessageType, encodeFrame } from './frame.js';
import { decodeResponse, encodeRequestFrame } from './wire.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const S = 'test.v1.Echo';
const isCode = (code: number, re?: RegExp) => (e: any) => {
  assert.ok(e instanceof BerthError, `expected a BerthError, got ${e}`);
  assert.equal(e.code, code, `code ${e.code} (${e.message})`);
  if (re) assert.match(e.message, re);
  return true;
};

/** A raw connection speaking frames by hand, for what a well-behaved client never sends. */
async function rawPeer(path: string) {
  const sock = net.connect(path);
  await new Promise((r) => sock.once('connect', r));
  const frames: { id: number; type: number; flags: number; data: Buffer }[] = [];
  let wake: (() => void) | undefined;
  const r = new FrameReader({
    frame: (id, type, flags, data) => {
      frames.push({ id, type, flags, data: Buffer.from(data) });
      wake?.();
    },
    oversize: () => assert.fail('oversize from server'),
  });
  sock.on('data', (c) => r.push(c));
  return {
    sock,
    async next() {
      while (!frames.length) await new Promise<void>((res) => (wake = res));
      return frames.shift()!;
    },
  };
}

describe('ttrpc client and server over a unix socket', () => {
  let dir: string;
  let path: string;
  let server: TtrpcServer;
  let client: TtrpcClient;
  const seen: ServerContext[] = [];
  let release: (() => void) | undefined;
  let signalReason: unknown;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ttrpc-'));
    path = join(dir, 'sub', 's.sock');
    server = new TtrpcServer();
    server.register(S, 'Echo', (b) => b);
    server.register(S, 'Upper', async (b) => Buffer.from(b.toString().toUpperCase()));
    server.register(S, 'Ctx', (b, ctx) => {
      seen.push(ctx);
      return Buffer.from(JSON.stringify({ md: ctx.metadata, deadline: ctx.deadline ?? null }));
    });
    server.register(S, 'NotFound', () => {
      throw notFound('container "c1"');
    });
    server.register(S, 'Plain', async () => {
      throw new Error('plain failure');
    });
    server.register(S, 'Sleep', async (b) => {
      await sleep(Number(b.toString()));
      return b;
    });
    server.register(S, 'Hold', () => new Promise<Uint8Array>((resolve) => (release = () => resolve(Buffer.from('held')))));
    server.register(S, 'UntilAborted', (_b, ctx) =>
      new Promise((_, reject) =>
        ctx.signal.addEventListener('abort', () => {
          signalReason = ctx.signal.reason;
          reject(ctx.signal.reason);
        }),
      ),
    );
    server.register(S, 'Big', (b) => Buffer.alloc(Number(b.toString()), 0x61));
    server.register(S, 'Empty', () => {});
    await server.listen(path);
    client = await TtrpcClient.connect(path);
  });

  after(async () => {
    client?.close();
    await server?.close({ timeoutMs: 1000 });
    rmSync(dir, { recursive: true, force: true });
  });

  test('the socket is made 0600, as containerd makes shim sockets', () => {
    assert.equal(statSync(path).mode & 0o777, 0o600);
  });

  test('unary calls return the handler\'s bytes; an empty response is empty', async () => {
    assert.equal((await client.call(S, 'Echo', Buffer.from('hi'))).toString(), 'hi');
    assert.equal((await client.call(S, 'Upper', Buffer.from('abc'))).toString(), 'ABC');
    assert.equal((await client.call(S, 'Empty', Buffer.alloc(0))).length, 0);
    assert.equal((await client.call(S, 'Echo', Buffer.alloc(0))).length, 0);
  });

  test('metadata (repeated keys kept) and the deadline reach the handler', async () => {
    const before = Date.now();
    const out = JSON.parse((await client.call(S, 'Ctx', Buffer.alloc(0), { metadata: { 'containerd-namespace': 'ns1', multi: ['a', 'b'] }, timeoutMs: 5000 })).toString());
    assert.deepEqual(out.md, { 'containerd-namespace': ['ns1'], multi: ['a', 'b'] });
    assert.ok(out.deadline >= before + 4900 && out.deadline <= Date.now() + 5000, `deadline ${out.deadline - before}`);
    const none = JSON.parse((await client.call(S, 'Ctx', Buffer.alloc(0))).toString());
    assert.deepEqual(none, { md: {}, deadline: null });
  });

  test('errors cross as statuses: kinds kept, other errors Unknown, missing service or method Unimplemented', async () => {
    await assert.rejects(client.call(S, 'NotFound', Buffer.alloc(0)), isCode(Code.NotFound, /^container "c1": not found$/));
    await assert.rejects(client.call(S, 'Plain', Buffer.alloc(0)), isCode(Code.Unknown, /^plain failure$/));
    await assert.rejects(client.call('no.Such', 'X', Buffer.alloc(0)), isCode(Code.Unimplemented, /^service no\.Such$/));
    await assert.rejects(client.call(S, 'Nope', Buffer.alloc(0)), isCode(Code.Unimplemented, /^method Nope$/));
  });

  test('100 calls in flight on one connection, answered out of order, each gets its own answer', async () => {
    const calls = Array.from({ length: 100 }, (_, i) => client.call(S, 'Sleep', Buffer.from(String((i * 7) % 30))));
    assert.equal(client.inFlight, 100);
    const out = await Promise.all(calls);
    assert.deepEqual(out.map((b) => b.toString()), Array.from({ length: 100 }, (_, i) => String((i * 7) % 30)));
    assert.equal(client.inFlight, 0);
  });

  test('a timeout fails the call with DeadlineExceeded, the server\'s signal aborts, and the connection stays usable', async () => {
    signalReason = undefined;
    const t0 = Date.now();
    await assert.rejects(client.call(S, 'UntilAborted', Buffer.alloc(0), { timeoutMs: 80 }), isCode(Code.DeadlineExceeded));
    assert.ok(Date.now() - t0 >= 75);
    await sleep(30);
    assert.ok(signalReason instanceof BerthError && signalReason.code === Code.DeadlineExceeded, 'server side deadline');
    assert.equal((await client.call(S, 'Echo', Buffer.from('after'))).toString(), 'after');
  });

  test('a late answer to a timed-out call is dropped and does not disturb later calls', async () => {
    await assert.rejects(client.call(S, 'Sleep', Buffer.from('60'), { timeoutMs: 10 }), isCode(Code.DeadlineExceeded));
    const later = client.call(S, 'Sleep', Buffer.from('100'));
    await sleep(70); // the first answer arrives meanwhile
    assert.equal((await later).toString(), '100');
  });

  test('cancellation by signal: before the call and during it', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(client.call(S, 'Echo', Buffer.alloc(0), { signal: ac.signal }), isCode(Code.Canceled));
    const ac2 = new AbortController();
    const p = client.call(S, 'Sleep', Buffer.from('200'), { signal: ac2.signal });
    setTimeout(() => ac2.abort(), 20);
    const t0 = Date.now();
    await assert.rejects(p, isCode(Code.Canceled));
    assert.ok(Date.now() - t0 < 150);
    assert.equal(client.inFlight, 0);
  });

  test('messages past 4 MiB: the request is refused locally, the response as ResourceExhausted; the connection lives on', async () => {
    await assert.rejects(client.call(S, 'Echo', Buffer.alloc(MAX_MESSAGE_LENGTH)), isCode(Code.ResourceExhausted));
    await assert.rejects(client.call(S, 'Big', Buffer.from(String(MAX_MESSAGE_LENGTH))), isCode(Code.ResourceExhausted));
    const near = await client.call(S, 'Big', Buffer.from(String(MAX_MESSAGE_LENGTH - 64)));
    assert.equal(near.length, MAX_MESSAGE_LENGTH - 64);
    assert.equal((await client.call(S, 'Echo', Buffer.from('still'))).toString(), 'still');
  });

  test('an oversized frame from a peer is answered ResourceExhausted on its stream; the next request is served', async () => {
    const raw = await rawPeer(path);
    const header = Buffer.alloc(10);
    header.writeUInt32BE(MAX_MESSAGE_LENGTH + 1, 0);
    header.writeUInt32BE(1, 4);
    header[8] = MessageType.Request;
    raw.sock.write(header);
    raw.sock.write(Buffer.alloc(MAX_MESSAGE_LENGTH + 1));
    raw.sock.write(encodeRequestFrame(3, 0, { service: S, method: 'Echo', payload: Buffer.from('ok') }));
    const a = await raw.next();
    assert.equal(a.id, 1);
    assert.equal(decodeResponse(a.data).status!.code, Code.ResourceExhausted);
    const b = await raw.next();
    assert.equal(b.id, 3);
    assert.equal(decodeResponse(b.data).payload!.toString(), 'ok');
    raw.sock.destroy();
  });

  test('protocol rules: even and reused stream ids are InvalidArgument, unknown frame types ignored', async () => {
    const raw = await rawPeer(path);
    raw.sock.write(encodeRequestFrame(2, 0, { service: S, method: 'Echo' }));
    let f = await raw.next();
    assert.equal(f.id, 2);
    assert.deepEqual(decodeResponse(f.data).status, { code: Code.InvalidArgument, message: 'StreamID must be odd for client initiated streams' });
    raw.sock.write(encodeRequestFrame(5, 0, { service: S, method: 'Echo', payload: Buffer.from('5') }));
    f = await raw.next();
    assert.equal(decodeResponse(f.data).payload!.toString(), '5');
    raw.sock.write(encodeFrame(7, 9, 0, Buffer.from('future')));
    raw.sock.write(encodeRequestFrame(3, 0, { service: S, method: 'Echo' }));
    f = await raw.next();
    assert.equal(f.id, 3);
    assert.equal(decodeResponse(f.data).status!.code, Code.InvalidArgument);
    raw.sock.write(encodeFrame(9, MessageType.Data, 0, Buffer.from('x')));
    f = await raw.next();
    assert.deepEqual(decodeResponse(f.data).status, { code: Code.InvalidArgument, message: 'StreamID is no longer active' });
    raw.sock.destroy();
  });

  test('a dropped connection fails every pending call at once with Unavailable, and later calls too', async () => {
    const c = await TtrpcClient.connect(path);
    const pending = Array.from({ length: 20 }, () => c.call(S, 'Sleep', Buffer.from('5000')));
    await sleep(20);
    const t0 = Date.now();
    server.destroyAll();
    const results = await Promise.allSettled(pending);
    assert.ok(Date.now() - t0 < 1000);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      isCode(Code.Unavailable, /ttrpc: closed/)((r as PromiseRejectedResult).reason);
    }
    await c.closed;
    await assert.rejects(c.call(S, 'Echo', Buffer.alloc(0)), isCode(Code.Unavailable));
    // the shared client was dropped too; reconnect it for the tests after
    client = await TtrpcClient.connect(path);
  });

  test('connecting where nothing listens is Unavailable', async () => {
    await assert.rejects(TtrpcClient.connect(join(dir, 'none.sock')), isCode(Code.Unavailable, /ENOENT/));
    const c = new TtrpcClient(join(dir, 'none.sock'));
    await assert.rejects(c.call(S, 'Echo', Buffer.alloc(0)), isCode(Code.Unavailable));
  });

  test('a socket in use is AlreadyExists; a stale socket file is replaced', async () => {
    await assert.rejects(new TtrpcServer().listen(path), isCode(Code.AlreadyExists));
    const stalePath = join(dir, 'stale.sock');
    const s1 = net.createServer().listen(stalePath);
    await new Promise((r) => s1.once('listening', r));
    // a listener killed without unlinking leaves its file behind
    (s1 as any)._handle.close();
    const s2 = new TtrpcServer().register(S, 'Echo', (b) => b);
    await s2.listen(stalePath);
    const c = await TtrpcClient.connect(stalePath);
    assert.equal((await c.call(S, 'Echo', Buffer.from('fresh'))).toString(), 'fresh');
    c.close();
    await s2.close();
  });

  test('typed service over @berth/api codecs: containerd.task.v2.Task', async () => {
    const task = service('containerd.task.v2.Task');
    const s = new TtrpcServer();
    serveService(s, task, {
      State: (req: any, ctx) => ({ id: req.id, pid: 42, status: 'RUNNING', bundle: ctx.metadata['containerd-namespace']?.[0] ?? '' }),
      Kill: () => {},
    });
    const p = join(dir, 'typed.sock');
    await s.listen(p);
    const c = serviceClient(await TtrpcClient.connect(p), task);
    const st = await c.State!({ id: 'c1' }, { metadata: { 'containerd-namespace': 'ns9' } });
    assert.equal(st.id, 'c1');
    assert.equal(st.pid, 42);
    assert.equal(st.status, 'RUNNING');
    assert.equal(st.bundle, 'ns9');
    assert.deepEqual(await c.Kill!({ id: 'c1', signal: 9 }), {});
    await assert.rejects(c.Pids!({ id: 'c1' }), isCode(Code.Unimplemented, /method Pids/));
    await s.close({ timeoutMs: 500 });
  });

  test('graceful close: listening stops at once, in-flight calls are answered, then connections close', async () => {
    const s = new TtrpcServer();
    let held!: () => void;
    s.register(S, 'Hold', () => new Promise<Uint8Array>((r) => (held = () => r(Buffer.from('done')))));
    const p = join(dir, 'graceful.sock');
    await s.listen(p);
    const c = await TtrpcClient.connect(p);
    const idle = await TtrpcClient.connect(p);
    const inflight = c.call(S, 'Hold', Buffer.alloc(0));
    await sleep(20);
    const closing = s.close();
    await idle.closed; // an idle connection is closed at once
    await assert.rejects(TtrpcClient.connect(p), isCode(Code.Unavailable));
    assert.equal(c.isClosed, false);
    held();
    assert.equal((await inflight).toString(), 'done');
    await closing;
    await c.closed;
  });

  test('a handler may answer much later', async () => {
    const p = client.call(S, 'Hold', Buffer.alloc(0));
    await sleep(10);
    release!();
    assert.equal((await p).toString(), 'held');
  });

  test('the context names the service and method', () => {
    assert.ok(seen.every((c) => c.service === S && c.method === 'Ctx'));
  });
});

describe('ttrpc streams', () => {
  let dir: string;
  let path: string;
  let server: TtrpcServer;
  let client: TtrpcClient;
  let slowSent = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ttrpc-s-'));
    path = join(dir, 's.sock');
    server = new TtrpcServer();
    // server streaming: the request says how many to send
    server.registerStream(S, 'Count', { clientStreaming: false, serverStreaming: true }, async (stream) => {
      const n = Number((await stream.recv())!.toString());
      for (let i = 0; i < n; i++) await stream.send(Buffer.from(String(i)));
      assert.equal(await stream.recv(), undefined, 'non-client-streaming: one message, then the end');
    });
    // client streaming: sums what arrives, answers once
    server.registerStream(S, 'Sum', { clientStreaming: true, serverStreaming: false }, async (stream) => {
      let sum = 0;
      for await (const m of stream) sum += Number(m.toString());
      return Buffer.from(String(sum));
    });
    // both ways: echoes each message upper-cased, then a last message with the count
    server.registerStream(S, 'Chat', { clientStreaming: true, serverStreaming: true }, async (stream) => {
      let n = 0;
      for await (const m of stream) {
        n++;
        await stream.send(Buffer.from(m.toString().toUpperCase()));
      }
      return Buffer.from(`bye ${n}`);
    });
    server.registerStream(S, 'FailAfterTwo', { clientStreaming: false, serverStreaming: true }, async (stream) => {
      await stream.send(Buffer.from('1'));
      await stream.send(Buffer.from('2'));
      throw notFound('third');
    });
    server.registerStream(S, 'Flood', { clientStreaming: false, serverStreaming: true }, async (stream) => {
      const chunk = Buffer.alloc(256 * 1024, 0x62);
      for (slowSent = 0; slowSent < 64; slowSent++) await stream.send(chunk);
    });
    server.registerStream(S, 'EmptyMessages', { clientStreaming: false, serverStreaming: true }, async (stream) => {
      await stream.send(Buffer.alloc(0));
      await stream.send(Buffer.alloc(0));
    });
    await server.listen(path);
    client = await TtrpcClient.connect(path);
  });

  after(async () => {
    client?.close();
    await server?.close({ timeoutMs: 1000 });
    rmSync(dir, { recursive: true, force: true });
  });

  test('server streaming: every message in order, then the end', async () => {
    const s = client.stream(S, 'Count', { clientStreaming: false, serverStreaming: true }, Buffer.from('5'));
    const got: string[] = [];
    for await (const m of s) got.push(m.toString());
    assert.deepEqual(got, ['0', '1', '2', '3', '4']);
    assert.equal(await s.response, undefined);
    assert.equal(client.inFlight, 0);
  });

  test('zero-length messages are messages (no-data is a flag, not a length)', async () => {
    const s = client.stream(S, 'EmptyMessages', { clientStreaming: false, serverStreaming: true }, Buffer.alloc(0));
    const got: number[] = [];
    for await (const m of s) got.push(m.length);
    assert.deepEqual(got, [0, 0]);
  });

  test('client streaming: messages, close-send, one response', async () => {
    const s = client.stream(S, 'Sum', { clientStreaming: true, serverStreaming: false });
    for (const n of [1, 2, 3, 4]) await s.send(Buffer.from(String(n)));
    s.closeSend();
    assert.equal((await s.response)!.toString(), '10');
  });

  test('both ways, interleaved; a last message rides on the closing frame', async () => {
    const s = client.stream(S, 'Chat', { clientStreaming: true, serverStreaming: true });
    await s.send(Buffer.from('a'));
    assert.equal((await s.recv())!.toString(), 'A');
    await s.send(Buffer.from('b'));
    assert.equal((await s.recv())!.toString(), 'B');
    s.closeSend();
    assert.equal((await s.recv())!.toString(), 'bye 2');
    assert.equal(await s.recv(), undefined);
  });

  test('an error mid-stream arrives after the messages sent before it, as the status\'s error', async () => {
    const s = client.stream(S, 'FailAfterTwo', { clientStreaming: false, serverStreaming: true }, Buffer.alloc(0));
    assert.equal((await s.recv())!.toString(), '1');
    assert.equal((await s.recv())!.toString(), '2');
    await assert.rejects(s.recv(), isCode(Code.NotFound, /third: not found/));
    await assert.rejects(s.response, isCode(Code.NotFound));
  });

  test('a slow reader holds the sender back (back-pressure through the socket), and everything arrives', async () => {
    const s = client.stream(S, 'Flood', { clientStreaming: false, serverStreaming: true }, Buffer.alloc(0));
    await sleep(300);
    assert.ok(slowSent < 64, `sender ran ahead of a reader that read nothing: ${slowSent} of 64 sent`);
    let n = 0;
    for await (const m of s) {
      assert.equal(m.length, 256 * 1024);
      n++;
    }
    assert.equal(n, 64);
    // and unary calls still flow on the same connection afterwards
    const s2 = client.stream(S, 'Count', { clientStreaming: false, serverStreaming: true }, Buffer.from('1'));
    assert.equal((await s2.recv())!.toString(), '0');
  });

  test('streams and unary calls share a connection; a stream times out alone', async () => {
    server.registerStream(S, 'Never', { clientStreaming: false, serverStreaming: true }, (stream, ctx) => new Promise((_, rej) => ctx.signal.addEventListener('abort', () => rej(ctx.signal.reason))));
    const s = client.stream(S, 'Never', { clientStreaming: false, serverStreaming: true, timeoutMs: 50 }, Buffer.alloc(0));
    await assert.rejects(s.recv(), isCode(Code.DeadlineExceeded));
    const ok = client.stream(S, 'Count', { clientStreaming: false, serverStreaming: true }, Buffer.from('2'));
    const got: string[] = [];
    for await (const m of ok) got.push(m.toString());
    assert.deepEqual(got, ['0', '1']);
  });

  test('a dropped connection fails open streams with Unavailable', async () => {
    const c = await TtrpcClient.connect(path);
    const s = c.stream(S, 'Sum', { clientStreaming: true, serverStreaming: false });
    await s.send(Buffer.from('1'));
    await sleep(10);
    server.destroyAll();
    await assert.rejects(s.response, isCode(Code.Unavailable));
    client = await TtrpcClient.connect(path);
  });

  test('wire flags: a client stream opens with remote-open and closes with remote-closed|no-data', async () => {
    // checked on the wire by a raw server
    const p = join(dir, 'raw.sock');
    const frames: { id: number; type: number; flags: number; len: number }[] = [];
    const raw = net.createServer((sock) => {
      const r = new FrameReader({ frame: (id, type, flags, data) => frames.push({ id, type, flags, len: data.length }), oversize: () => {} });
      sock.on('data', (c) => r.push(c));
    });
    await new Promise<void>((r) => raw.listen(p, r));
    const c = await TtrpcClient.connect(p);
    const s = c.stream(S, 'Sum', { clientStreaming: true, serverStreaming: false });
    await s.send(Buffer.from('7'));
    s.closeSend();
    c.stream(S, 'Count', { clientStreaming: false, serverStreaming: true }, Buffer.from('1'));
    await sleep(50);
    assert.deepEqual(frames.map(({ id, type, flags }) => [id, type, flags]), [
      [1, MessageType.Request, Flags.RemoteOpen],
      [1, MessageType.Data, 0],
      [1, MessageType.Data, Flags.RemoteClosed | Flags.NoData],
      [3, MessageType.Request, Flags.RemoteClosed],
    ]);
    c.close();
    raw.close();
  });
});
