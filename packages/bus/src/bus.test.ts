import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { codec, method, service } from '@berth/api';
import { BerthError, Code, notFound } from '@berth/errdefs';
import { BusClient, BusServer, type BidiStream, type CallContext, type StreamContext, rpcSubject, eventSubject, parseEventSubject, token, untoken } from './index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ns = service('containerd.services.namespaces.v1.Namespaces');
const content = service('containerd.services.content.v1.Content');
const GetReq = codec('containerd.services.namespaces.v1.GetNamespaceRequest');
const GetRes = codec('containerd.services.namespaces.v1.GetNamespaceResponse');
const ReadReq = codec('containerd.services.content.v1.ReadContentRequest');
const ReadRes = codec('containerd.services.content.v1.ReadContentResponse');
const WriteReq = codec('containerd.services.content.v1.WriteContentRequest');
const WriteRes = codec('containerd.services.content.v1.WriteContentResponse');

describe('subjects', () => {
  test('tokens escape what NATS would split on and round trip', () => {
    assert.equal(token('k8s.io'), 'k8s%2Eio');
    assert.equal(untoken(token('a.b*c>d%e f')), 'a.b*c>d%e f');
    assert.equal(untoken(token('')), '');
    assert.equal(rpcSubject('node.1', 'content', 'Read'), 'berth.node%2E1.content.v1.Read');
    assert.equal(eventSubject('k8s.io', '/tasks/exit'), 'berth.events.k8s%2Eio.tasks.exit');
    assert.deepEqual(parseEventSubject('berth.events.k8s%2Eio.tasks.exit'), { namespace: 'k8s.io', topic: '/tasks/exit' });
  });
});

describe('bus over a real nats-server', () => {
  let dir: string;
  let natsd: NatsServer;
  let snc: NatsConnection;
  let cnc: NatsConnection;
  let server: BusServer;
  let client: BusClient;
  let sentByServer = 0;
  let cancelled = false;
  const node = 'test.node';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-bus-'));
    natsd = await startNatsServer({ dir });
    snc = await connect({ servers: natsd.url });
    cnc = await connect({ servers: natsd.url });
    server = await BusServer.start(snc, { name: 'unit', node, channel: { window: 8, heartbeat: 100 } });
    server.serveGrpc(ns, {
      Get: async (req: { name: string }, ctx: CallContext) => {
        if (req.name === 'missing') throw notFound(`namespace "${req.name}"`);
        if (req.name === 'slow') await sleep(500);
        if (req.name === 'slower') await sleep(800);
        if (req.name === 'crash') throw new TypeError('a bug');
        return { namespace: { name: req.name, labels: { seen: ctx.namespace ?? '' } } };
      },
    });
    server.serveGrpc(content, {
      Read: async (req: { digest: string; size: number }, ctx: StreamContext, send: (r: unknown) => Promise<void>) => {
        if (req.digest === 'wait-for-cancel') {
          await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
          cancelled = true;
          return;
        }
        for (let i = 0; i < req.size; i++) {
          await send({ offset: i, data: Buffer.from(`chunk-${i}`) });
          sentByServer = i + 1;
        }
        if (req.digest === 'fail-after') throw new BerthError(Code.DataLoss, 'broke off');
      },
      Write: async (_ctx: StreamContext, stream: BidiStream) => {
        for await (const r of stream.recv()) await stream.send({ action: r.action, offset: r.offset, total: Buffer.from(r.data).length });
      },
    });
    await snc.flush();
    client = new BusClient(cnc);
    client.channelOptions = { window: 8, heartbeat: 100 };
  });

  after(async () => {
    await server?.stop();
    await snc?.close();
    await cnc?.close();
    await natsd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const subj = (m: string) => rpcSubject(node, 'unit', m);

  test('unary: bytes through unchanged, context in headers', async () => {
    const res = GetRes.decode(await client.unary(subj('Get'), GetReq.encode({ name: 'a' }), { namespace: 'k8s.io' }));
    assert.equal(res.namespace.name, 'a');
    assert.equal(res.namespace.labels.seen, 'k8s.io');
  });

  test('unary: an error keeps its code and message', async () => {
    await assert.rejects(client.unary(subj('Get'), GetReq.encode({ name: 'missing' })), (e: BerthError) => {
      assert.equal(e.code, Code.NotFound);
      assert.equal(e.message, 'namespace "missing": not found');
      return true;
    });
    await assert.rejects(client.unary(subj('Get'), GetReq.encode({ name: 'crash' })), (e: BerthError) => e.code === Code.Unknown && /a bug/.test(e.message));
  });

  test('unary: malformed bytes are InvalidArgument', async () => {
    await assert.rejects(client.unary(subj('Get'), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])), (e: BerthError) => e.code === Code.InvalidArgument && /malformed containerd.services.namespaces.v1.GetNamespaceRequest/.test(e.message));
  });

  test('a message over the server\'s max_payload is ResourceExhausted, saying which limit', async () => {
    const big = Buffer.alloc(cnc.info!.max_payload + 1);
    await assert.rejects(client.unary(subj('Get'), big), (e: BerthError) => e.code === Code.ResourceExhausted && /max_payload/.test(e.message));
    const ch = await client.open(subj('Write'), 'bidi', undefined);
    await assert.rejects(ch.send(big), (e: BerthError) => e.code === Code.ResourceExhausted && /max_payload/.test(e.message));
    ch.cancel();
  });

  test('unary: a call longer than three liveness beats goes on while the service beats', async () => {
    const c = new BusClient(cnc);
    c.liveness = 100;
    const res = GetRes.decode(await c.unary(subj('Get'), GetReq.encode({ name: 'slower' })));
    assert.equal(res.namespace.name, 'slower');
  });

  test('unary: a service that dies during the call is Unavailable after three silent beats', async () => {
    const dnc = await connect({ servers: natsd.url });
    const dying = await BusServer.start(dnc, { name: 'dying-unary', node });
    dying.serveGrpc(ns, { Get: () => new Promise(() => {}) });
    await dnc.flush();
    const c = new BusClient(cnc);
    c.liveness = 100;
    const call = c.unary(rpcSubject(node, 'dying-unary', 'Get'), GetReq.encode({ name: 'x' })).then(() => undefined, (e: BerthError) => e);
    await sleep(300);
    await dnc.close(); // like kill -9 mid-call
    const t0 = Date.now();
    const e = await call;
    assert.equal(e?.code, Code.Unavailable);
    assert.match(e!.message, /went away during the call/);
    assert.ok(Date.now() - t0 < 1000, `noticed after ${Date.now() - t0} ms`);
  });

  test('unary: a plain NATS request (no liveness asked) gets the single reply', async () => {
    const m = await cnc.request(subj('Get'), GetReq.encode({ name: 'slower' }), { timeout: 5000 });
    assert.equal(GetRes.decode(m.data).namespace.name, 'slower');
  });

  test('unary: nobody serving is Unavailable, at once', async () => {
    const t0 = Date.now();
    await assert.rejects(client.unary(rpcSubject(node, 'nothing', 'Get'), new Uint8Array(), {}, { timeout: 5000 }), (e: BerthError) => e.code === Code.Unavailable);
    assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
  });

  test('unary: the deadline is kept', async () => {
    await assert.rejects(client.unary(subj('Get'), GetReq.encode({ name: 'slow' }), { deadline: Date.now() + 100 }), (e: BerthError) => e.code === Code.DeadlineExceeded);
    await assert.rejects(client.unary(subj('Get'), GetReq.encode({ name: 'a' }), { deadline: Date.now() - 1 }), (e: BerthError) => e.code === Code.DeadlineExceeded);
  });

  test('server stream: in order, and the sender waits for the reader', async () => {
    sentByServer = 0;
    const ch = await client.open(subj('Read'), 'server', ReadReq.encode({ digest: 'x', size: 200 }));
    await sleep(200);
    // nobody read yet: the server may not have sent more than the window
    assert.ok(sentByServer <= 8, `server sent ${sentByServer} before any read`);
    const got: number[] = [];
    for await (const b of ch) got.push(ReadRes.decode(b).offset);
    assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i));
    assert.ok(ch.isClosed);
  });

  test('server stream: an error after data arrives after the data', async () => {
    const ch = await client.open(subj('Read'), 'server', ReadReq.encode({ digest: 'fail-after', size: 3 }));
    const got: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const b of ch) got.push(Buffer.from(ReadRes.decode(b).data).toString());
      })(),
      (e: BerthError) => e.code === Code.DataLoss && e.message === 'broke off',
    );
    assert.deepEqual(got, ['chunk-0', 'chunk-1', 'chunk-2']);
  });

  test('bidi: request and response interleave; half-close ends the call', async () => {
    const ch = await client.open(subj('Write'), 'bidi', undefined);
    for (let i = 0; i < 50; i++) {
      await ch.send(WriteReq.encode({ action: 'WRITE', offset: i, data: Buffer.alloc(i) }));
      const r = WriteRes.decode((await ch.recv())!);
      assert.equal(r.offset, i);
      assert.equal(r.total, i);
    }
    ch.end();
    assert.equal(await ch.recv(), undefined);
  });

  test('cancel reaches the server handler', async () => {
    cancelled = false;
    const ch = await client.open(subj('Read'), 'server', ReadReq.encode({ digest: 'wait-for-cancel' }));
    await sleep(50);
    ch.cancel();
    for (let i = 0; i < 40 && !cancelled; i++) await sleep(10);
    assert.ok(cancelled);
  });

  test('a stream to a process that died fails with Unavailable after missed heartbeats', async () => {
    const dnc = await connect({ servers: natsd.url });
    const dying = await BusServer.start(dnc, { name: 'dying', node, channel: { heartbeat: 100 } });
    dying.serveGrpc(content, { Read: async () => new Promise(() => {}) });
    await dnc.flush();
    const ch = await client.open(rpcSubject(node, 'dying', 'Read'), 'server', ReadReq.encode({ digest: 'x' }));
    await dnc.close(); // like kill -9: no goodbye frames
    const t0 = Date.now();
    await assert.rejects(ch.recv(), (e: BerthError) => e.code === Code.Unavailable);
    assert.ok(Date.now() - t0 < 2000);
  });

  test('the micro service API lists the service and its endpoints', async () => {
    const it = await cnc.requestMany('$SRV.INFO.berth-unit', '', { maxWait: 1000, maxMessages: 1 });
    const infos = [];
    for await (const m of it) infos.push(m.json<{ name: string; metadata: Record<string, string>; endpoints: { name: string; subject: string }[] }>());
    assert.equal(infos.length, 1);
    assert.equal(infos[0]!.metadata.node, node);
    assert.ok(infos[0]!.endpoints.some((e) => e.subject === subj('Read')));
    assert.equal(method('/containerd.services.content.v1.Content/Read').responseStream, true);
  });
});

describe('event topics', () => {
  test('every topic names an event message that exists', async () => {
    const { eventTypes } = await import('./topics.js');
    const { root } = await import('@berth/api');
    for (const [topic, type] of Object.entries(eventTypes)) assert.ok(root.lookupType(type), topic);
    assert.equal(eventTypes['/tasks/exit'], 'containerd.events.TaskExit');
  });
});

describe('namespace usage across services', () => {
  test('asks the configured services, and refuses to guess when one is down', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-usage-'));
    const natsd = await startNatsServer({ dir });
    const nc = await connect({ servers: natsd.url });
    try {
      const { namespaceUsage, serveNamespaceUsage } = await import('./usage.js');
      const images = await BusServer.start(nc, { name: 'images', node: 'u' });
      serveNamespaceUsage(images, async (ns) => (ns === 'full' ? ['images'] : []));
      const content = await BusServer.start(nc, { name: 'content', node: 'u' });
      serveNamespaceUsage(content, async (ns) => (ns === 'full' ? ['blobs'] : []));
      await nc.flush();
      const client = new BusClient(nc);
      assert.deepEqual(await namespaceUsage(client, 'u', ['content', 'images', 'gateway'], 'full'), ['images', 'blobs']);
      assert.deepEqual(await namespaceUsage(client, 'u', ['content', 'images'], 'empty'), []);
      // a data-holding service the node runs but that does not answer: no verdict
      await assert.rejects(namespaceUsage(client, 'u', ['content', 'containers'], 'empty'), (e: BerthError) => e.code === Code.Unavailable && /containers service not running/.test(e.message));
      await images.stop();
      await content.stop();
    } finally {
      await nc.close();
      await natsd.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
