// The gateway's forwarded unary calls (served on node:http2 directly, services/gateway/src/lean.ts)
// against a real stack, driven by a raw HTTP/2 client so that what grpc-js's own client never
// sends can be sent: no message, two messages, a compressed one, a bad grpc-timeout, another
// content type, a message past the limit. Each answer must be what grpc-js's server gives (the
// same status codes: both are run), and a call to a service that stopped answering ends at its
// deadline.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import { codec } from '@berth/api';
import { natsWith, sleep, startStack, type Stack } from './harness.js';

const GET = '/containerd.services.namespaces.v1.Namespaces/Get';
const LIST = '/containerd.services.namespaces.v1.Namespaces/List';
const Get = codec('containerd.services.namespaces.v1.GetNamespaceRequest');
const GetRes = codec('containerd.services.namespaces.v1.GetNamespaceResponse');

interface Answer {
  status: number;
  grpcStatus?: string;
  grpcMessage?: string;
  body: Buffer;
}

const frame = (msg: Uint8Array, compressed = false) => {
  const b = Buffer.alloc(5 + msg.length);
  b[0] = compressed ? 1 : 0;
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
};

// the same answers from the lean path and from grpc-js serving every call (BERTH_GATEWAY_LEAN=0)
for (const lean of ['1', '0']) describe(`gateway: forwarded unary calls on HTTP/2 (${lean === '1' ? 'lean path' : 'grpc-js'})`, { timeout: 120_000 }, () => {
  let stack: Stack;
  let session: http2.ClientHttp2Session;

  before(async () => {
    stack = await startStack({ env: { BERTH_GATEWAY_LEAN: lean } });
    // a client that may buffer a 17 MiB request (node's default session memory is 10 MB)
    session = http2.connect('http://localhost', { createConnection: () => net.connect(stack.sock), maxSessionMemory: 1000 });
  });
  after(async () => {
    session?.close();
    await stack?.stop();
  });

  /** One call: `frames` as the request body, in separate DATA frames. */
  function call(path: string, frames: Buffer[], headers: Record<string, string> = {}): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', 'containerd-namespace': 'default', ...headers });
      const chunks: Buffer[] = [];
      let status = 0;
      const a: Partial<Answer> = {};
      req.on('response', (h) => {
        status = Number(h[':status']);
        if (h['grpc-status'] !== undefined) Object.assign(a, { grpcStatus: String(h['grpc-status']), grpcMessage: decodeURIComponent(String(h['grpc-message'] ?? '')) });
      });
      req.on('trailers', (t) => Object.assign(a, { grpcStatus: String(t['grpc-status']), grpcMessage: decodeURIComponent(String(t['grpc-message'] ?? '')) }));
      req.on('data', (b: Buffer) => chunks.push(b));
      req.on('end', () => resolve({ ...a, status, body: Buffer.concat(chunks) }));
      req.on('error', reject);
      for (const f of frames) req.write(f);
      req.end();
    });
  }

  test('a call answers with its message and status 0, the namespace from the headers', async () => {
    const r = await call(GET, [frame(Get.encode({ name: 'default' }))]);
    assert.equal(r.grpcStatus, '0', r.grpcMessage);
    assert.equal(r.body.readUInt32BE(1), r.body.length - 5);
    assert.equal(GetRes.decode(r.body.subarray(5)).namespace.name, 'default');
    const split = frame(Get.encode({ name: 'default' }));
    const r2 = await call(GET, [split.subarray(0, 2), split.subarray(2, 7), split.subarray(7)]);
    assert.equal(r2.grpcStatus, '0', 'a message split over DATA frames, its prefix too');
    const nf = await call('/containerd.services.containers.v1.Containers/Get', [frame(codec('containerd.services.containers.v1.GetContainerRequest').encode({ id: 'nope' }))]);
    assert.equal(nf.grpcStatus, '5', 'an error comes back with its code and words');
    assert.match(nf.grpcMessage!, /not found/);
  });

  test('no message, a truncated one, two messages: UNIMPLEMENTED, as grpc-js answers them', async () => {
    assert.equal((await call(LIST, [])).grpcStatus, '12');
    const one = frame(Get.encode({ name: 'default' }));
    assert.equal((await call(GET, [one, one])).grpcStatus, '12');
    assert.equal((await call(GET, [one.subarray(0, one.length - 1)])).grpcStatus, '12');
  });

  test('a message past the receive limit: RESOURCE_EXHAUSTED, before it is all in', async () => {
    const big = Buffer.alloc(17 << 20);
    const r = await call(GET, [frame(big)]);
    assert.equal(r.grpcStatus, '8', r.grpcMessage);
    assert.match(r.grpcMessage!, /larger than max/);
  });

  test('a gzip-compressed request is served (by grpc-js), a malformed grpc-timeout is INTERNAL, another content type 415', async () => {
    const z = await call(GET, [frame(gzipSync(Get.encode({ name: 'default' })), true)], { 'grpc-encoding': 'gzip' });
    assert.equal(z.grpcStatus, '0', z.grpcMessage);
    const bad = await call(LIST, [frame(new Uint8Array())], { 'grpc-timeout': 'soon' });
    assert.equal(bad.grpcStatus, '13');
    assert.match(bad.grpcMessage!, /grpc-timeout/);
    const json = await call(LIST, [Buffer.from('{}')], { 'content-type': 'application/json' });
    assert.equal(json.status, 415);
  });

  test('a client that cancels a call (RST_STREAM) has it cancelled at the service', async () => {
    // the namespaces service's own credentials: it listens for cancels of its calls there
    const nc = await natsWith(stack.natsUrl, stack.credentials('namespaces'));
    const cancels = nc.subscribe('berth.it-node.namespaces.v1.$cancel');
    await nc.flush();
    const pid = stack.pid('namespaces');
    process.kill(pid, 'SIGSTOP'); // the call waits at the service
    try {
      // a namespace of its own: an answer the gateway keeps (readcache.ts) would not reach the service
      const req = session.request({ ':method': 'POST', ':path': LIST, 'content-type': 'application/grpc', te: 'trailers', 'containerd-namespace': 'uncached-1' });
      req.on('error', () => undefined);
      req.end(frame(new Uint8Array()));
      await sleep(300);
      req.close(http2.constants.NGHTTP2_CANCEL);
      const got = await Promise.race([(async () => { for await (const m of cancels) return m; })(), sleep(5000).then(() => undefined)]);
      assert.ok(got, 'a cancel reached the service\'s $cancel subject');
      assert.match(new TextDecoder().decode(got.data), /^_INBOX/, 'naming the call by its reply inbox');
    } finally {
      process.kill(pid, 'SIGCONT');
      await nc.close();
    }
  });

  test('a service that stops answering: the call ends at its grpc-timeout with DEADLINE_EXCEEDED; the service serves again after', async () => {
    const pid = stack.pid('namespaces');
    process.kill(pid, 'SIGSTOP');
    try {
      const t0 = Date.now();
      const r = await call(LIST, [frame(new Uint8Array())], { 'grpc-timeout': '300m', 'containerd-namespace': 'uncached-2' });
      const took = Date.now() - t0;
      assert.equal(r.grpcStatus, '4', r.grpcMessage);
      assert.ok(took >= 250 && took < 5000, `answered after ${took} ms`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const again = await call(LIST, [frame(new Uint8Array())], { 'grpc-timeout': '10S' });
    assert.equal(again.grpcStatus, '0', again.grpcMessage);
  });
});
