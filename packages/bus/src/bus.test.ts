import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { createInbox, headers, type NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { codec, method, service } from '@berth/api';
import { BerthError, Code, notFound } from '@berth/errdefs';
import { BusClient, BusServer, type BidiStream, type CallContext, type StreamContext, rpcSubject, eventSubject, parseEventSubject, token, untoken, clampLiveness } from './index.js';

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
  let unaryCancel: unknown;
  let counted = 0;
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
        if (req.name === 'counted') counted++;
        if (req.name === 'wait-for-cancel') {
          const signal = (ctx as StreamContext).signal;
          await new Promise((resolve) => signal.addEventListener('abort', resolve));
          unaryCancel = signal.reason;
        }
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
        if (req.digest === 'burst') {
          // all sent in one turn, as an events subscriber's backlog is; message 20 too large to batch
          await sleep(100);
          await Promise.all(Array.from({ length: req.size }, (_, i) => send({ offset: i, data: Buffer.alloc(i === 20 ? 20 << 10 : 8, i) })));
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

  test('only a request with an inbox to answer is a call: deliveries onto a service subject are ignored', async () => {
    // what a JetStream push consumer pointed at a service subject would deliver
    cnc.publish(subj('Get'), GetReq.encode({ name: 'counted' }));
    cnc.publish(subj('Get'), GetReq.encode({ name: 'counted' }), { reply: '$JS.ACK.BERTH_EVENTS.c.1.1.1.1.0' });
    await cnc.flush();
    await sleep(100);
    assert.equal(counted, 0);
    await client.unary(subj('Get'), GetReq.encode({ name: 'counted' }));
    assert.equal(counted, 1);
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

  test('unary: a cancel rejects at once with Canceled and aborts the handler\'s signal', async () => {
    unaryCancel = undefined;
    const ac = new AbortController();
    const call = client.unary(subj('Get'), GetReq.encode({ name: 'wait-for-cancel' }), { signal: ac.signal }).then(() => undefined, (e: BerthError) => e);
    await sleep(100);
    ac.abort();
    const e = await Promise.race([call, sleep(50).then(() => 'still waiting')]);
    assert.equal((e as BerthError)?.code, Code.Canceled);
    for (let i = 0; i < 100 && unaryCancel === undefined; i++) await sleep(10);
    assert.equal((unaryCancel as BerthError)?.code, Code.Canceled);
  });

  test('a stream cancelled through its context is cancelled at the server', async () => {
    cancelled = false;
    const ac = new AbortController();
    const ch = await client.open(subj('Read'), 'server', ReadReq.encode({ digest: 'wait-for-cancel' }), { signal: ac.signal });
    ac.abort();
    await assert.rejects(ch.recv(), (e: BerthError) => e.code === Code.Canceled);
    for (let i = 0; i < 100 && !cancelled; i++) await sleep(10);
    assert.ok(cancelled);
  });

  test('a cleanly ended stream read far slower than the liveness timeout yields everything', async () => {
    // 100 ms beats, so silence over 300 ms is a dead peer; the reader takes 500 ms per message,
    // and the server ends (and goes quiet) while 4 messages still wait to be read
    const ch = await client.open(subj('Read'), 'server', ReadReq.encode({ digest: 'x', size: 8 }), {}, { window: 4, heartbeat: 100 });
    const got: number[] = [];
    for await (const b of ch) {
      got.push(ReadRes.decode(b).offset);
      await sleep(500);
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7]);
  });

  // a process starved of CPU (or busy in one long task) hears nothing meanwhile: the beats wait
  // in its socket, and its liveness timers fire before they are read
  const stall = (ms: number) => {
    const until = Date.now() + ms;
    while (Date.now() < until);
  };

  test('unary: a caller that stalls longer than three beats still gets the live service reply', async () => {
    const c = new BusClient(cnc);
    c.liveness = 100;
    const call = c.unary(subj('Get'), GetReq.encode({ name: 'slow' }));
    await sleep(50);
    stall(800);
    assert.equal(GetRes.decode(await call).namespace.name, 'slow');
  });

  test('a stream whose process stalls longer than three heartbeats goes on', async () => {
    const ch = await client.open(subj('Read'), 'server', ReadReq.encode({ digest: 'x', size: 8 }), {}, { window: 4, heartbeat: 100 });
    const got: number[] = [];
    for await (const b of ch) {
      got.push(ReadRes.decode(b).offset);
      if (got.length === 2) stall(800);
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7]);
  });

  test('the liveness a caller asks for is bounded', async () => {
    assert.equal(clampLiveness(1), 100);
    assert.equal(clampLiveness(1e9), 10_000);
    assert.equal(clampLiveness(250), 250);
    assert.equal(clampLiveness('nonsense'), undefined);
    assert.equal(clampLiveness(undefined, 7), 7);
    // a raw caller asking for a beat every millisecond gets one every 100 ms
    const inbox = createInbox();
    let pings = 0;
    const reply = new Promise<void>((resolve) => {
      cnc.subscribe(inbox, {
        max: 100,
        callback: (_e, m) => {
          if (m.headers?.get('berth-ctl') === 'ping') pings++;
          else resolve();
        },
      });
    });
    const h = headers();
    h.set('berth-liveness', '1');
    cnc.publish(subj('Get'), GetReq.encode({ name: 'slow' }), { reply: inbox, headers: h });
    await reply;
    assert.ok(pings >= 2 && pings <= 6, `${pings} beats in 500 ms`);
  });

  /**
   * A stand-in for a stream server that speaks the frames raw: answers the handshake with a
   * window of 8 and then sends what `script` publishes to the client's inbox.
   */
  async function rawServer(name: string, script: (peer: string) => void): Promise<() => void> {
    const sub = snc.subscribe(rpcSubject(node, name, 'Read'), {
      callback: (_e, m) => {
        const peer = m.headers!.get('berth-inbox');
        const h = headers();
        h.set('berth-inbox', createInbox());
        h.set('berth-window', '8');
        h.set('berth-liveness', '100');
        m.respond(new Uint8Array(), { headers: h });
        script(peer);
      },
    });
    await snc.flush();
    return () => sub.unsubscribe();
  }

  /** Reads a stream to its end; `settle` ms first, so all a raw server sent has arrived before any credit goes back. */
  async function drain(name: string, window = 8, settle = 0): Promise<{ got: number; err?: BerthError }> {
    const ch = await client.open(rpcSubject(node, name, 'Read'), 'server', ReadReq.encode({ digest: 'x' }), {}, { window });
    if (settle) await sleep(settle);
    let got = 0;
    try {
      while ((await ch.recv()) !== undefined) got++;
      return { got };
    } catch (e) {
      return { got, err: e as BerthError };
    }
  }

  test('a peer that sends more than the window it was granted is cut off', async () => {
    const stop = await rawServer('overrun', (peer) => {
      for (let i = 1; i <= 20; i++) snc.publish(`${peer}.${i}`, Buffer.from(`m${i}`));
    });
    // nothing read before all 20 arrive: a read grants credit, and frames it covered are no overrun
    const r = await drain('overrun', 4, 300);
    stop();
    assert.equal(r.err?.code, Code.ResourceExhausted, r.err?.message);
    assert.equal(r.got, 4);
  });

  test('a lost or forged data frame fails the stream before anything after it is delivered', async () => {
    const end = (peer: string, n: number) => {
      const h = headers();
      h.set('berth-ctl', 'end');
      h.set('berth-n', String(n));
      snc.publish(peer, new Uint8Array(), { headers: h });
    };
    const stopGap = await rawServer('gap', (peer) => {
      for (const i of [1, 2, 4, 5]) snc.publish(`${peer}.${i}`, Buffer.from(`m${i}`));
      end(peer, 5);
    });
    const gap = await drain('gap');
    stopGap();
    assert.equal(gap.err?.code, Code.Unavailable, gap.err?.message);
    assert.equal(gap.got, 2);
    // the last frame lost: only the count in the end frame can tell
    const stopTail = await rawServer('tail', (peer) => {
      for (const i of [1, 2]) snc.publish(`${peer}.${i}`, Buffer.from(`m${i}`));
      end(peer, 3);
    });
    const tail = await drain('tail');
    stopTail();
    assert.equal(tail.err?.code, Code.Unavailable, tail.err?.message);
  });

  test('messages sent in one turn travel as batches, in order, each intact', async () => {
    const ch = await client.open(subj('Read'), 'server', ReadReq.encode({ digest: 'burst', size: 40 }), {}, { window: 64 });
    // the frames on the wire, seen from the server's connection (the server sends after 100 ms)
    const frames: string[] = [];
    const spy = snc.subscribe(`${ch.inbox}.>`, { callback: (_e, m) => void frames.push(m.subject.slice(ch.inbox.length + 1)) });
    await snc.flush();
    const got: { offset: number; data: Uint8Array }[] = [];
    for await (const b of ch) got.push(ReadRes.decode(b));
    await snc.flush(); // the spy's copies of the frames reach the server's connection too
    spy.unsubscribe();
    assert.deepEqual(got.map((g) => g.offset), Array.from({ length: 40 }, (_, i) => i));
    for (const g of got) assert.deepEqual(Buffer.from(g.data), Buffer.alloc(g.offset === 20 ? 20 << 10 : 8, g.offset));
    // messages 1-20 in one batch, the large one alone, 22-40 in another
    assert.deepEqual(frames, ['1.20', '21', '22.19']);
  });

  test('batches from a peer are checked like frames: order, window, and their own framing', async () => {
    const batch = (...msgs: string[]) => Buffer.concat(msgs.flatMap((m) => [Buffer.from([0, 0, 0, m.length]), Buffer.from(m)]));
    const end = (peer: string, n: number) => {
      const h = headers();
      h.set('berth-ctl', 'end');
      h.set('berth-n', String(n));
      snc.publish(peer, new Uint8Array(), { headers: h });
    };
    const scripts: Record<string, (peer: string) => void> = {
      good: (peer) => {
        snc.publish(`${peer}.1.3`, batch('a', 'bb', 'ccc'));
        snc.publish(`${peer}.4`, Buffer.from('d'));
        snc.publish(`${peer}.5.2`, batch('e', ''));
        end(peer, 6);
      },
      gap: (peer) => {
        snc.publish(`${peer}.1.2`, batch('a', 'b'));
        snc.publish(`${peer}.4.2`, batch('d', 'e'));
      },
      overrun: (peer) => snc.publish(`${peer}.1.9`, batch('1', '2', '3', '4', '5', '6', '7', '8', '9')),
      short: (peer) => snc.publish(`${peer}.1.3`, batch('a', 'b')),
      torn: (peer) => snc.publish(`${peer}.1.2`, batch('a', 'bb').subarray(0, 9)),
      one: (peer) => snc.publish(`${peer}.1.1`, batch('a')),
    };
    const results: Record<string, { got: number; err?: BerthError }> = {};
    for (const [name, script] of Object.entries(scripts)) {
      const stop = await rawServer(`batch-${name}`, script);
      results[name] = await drain(`batch-${name}`, 8, name === 'overrun' ? 300 : 0);
      stop();
    }
    assert.deepEqual(results.good, { got: 6 });
    assert.equal(results.gap!.err?.code, Code.Unavailable, results.gap!.err?.message);
    assert.equal(results.gap!.got, 2);
    assert.equal(results.overrun!.err?.code, Code.ResourceExhausted, results.overrun!.err?.message);
    assert.equal(results.overrun!.got, 0);
    for (const bad of ['short', 'torn', 'one']) {
      assert.equal(results[bad]!.err?.code, Code.Internal, bad);
      assert.match(results[bad]!.err!.message, /malformed batch/);
      assert.equal(results[bad]!.got, 0, bad);
    }
  });

  test('a service serves a bounded number of streams', async () => {
    const limited = await BusServer.start(snc, { name: 'limited', node, maxStreams: 2 });
    limited.serveGrpc(content, { Read: (_req: unknown, ctx: StreamContext) => new Promise((resolve) => ctx.signal.addEventListener('abort', resolve)) });
    await snc.flush();
    const open = () => client.open(rpcSubject(node, 'limited', 'Read'), 'server', ReadReq.encode({ digest: 'x' }));
    const a = await open();
    await open();
    await assert.rejects(open(), (e: BerthError) => e.code === Code.ResourceExhausted && /2 streams at most/.test(e.message));
    a.cancel();
    await sleep(100); // the cancel frame reaches the server
    const c = await open();
    c.cancel();
    await limited.stop();
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

describe('bus across a nats-server restart', () => {
  test('open streams fail on both ends and calls in flight fail, with Unavailable; nothing hangs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-bus-restart-'));
    let natsd = await startNatsServer({ dir });
    const opts = { servers: natsd.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 };
    const snc = await connect(opts);
    const cnc = await connect(opts);
    try {
      const server = await BusServer.start(snc, { name: 'restart', node: 'r', channel: { window: 8, heartbeat: 100 } });
      let serverEnd: BerthError | undefined;
      server.serveGrpc(content, {
        Read: async (_req: unknown, _ctx: StreamContext, send: (r: unknown) => Promise<void>) => {
          try {
            for (let i = 0; ; i++) await send({ offset: i, data: Buffer.alloc(1024) });
          } catch (e) {
            serverEnd = e as BerthError;
            throw e;
          }
        },
      });
      server.serveGrpc(ns, { Get: () => new Promise(() => {}) });
      await snc.flush();
      const client = new BusClient(cnc);
      client.channelOptions = { window: 8, heartbeat: 100 };
      const ch = await client.open(rpcSubject('r', 'restart', 'Read'), 'server', ReadReq.encode({ digest: 'x' }));
      const reading = (async () => {
        let n = 0;
        try {
          for (;;) {
            const m = await ch.recv();
            assert.equal(ReadRes.decode(m!).offset, n++); // in order, no gap
            await sleep(5);
          }
        } catch (e) {
          return e as BerthError;
        }
      })();
      const call = client.unary(rpcSubject('r', 'restart', 'Get'), GetReq.encode({ name: 'x' })).then(() => undefined, (e: BerthError) => e);
      await sleep(300);
      natsd.process.kill('SIGKILL');
      await new Promise((r) => natsd.process.once('exit', r));
      const t0 = Date.now();
      natsd = await startNatsServer({ dir, port: natsd.port });
      const [readErr, callErr] = await Promise.all([reading, call]);
      assert.equal(readErr?.code, Code.Unavailable, readErr?.message);
      assert.equal(callErr?.code, Code.Unavailable, callErr?.message);
      for (let i = 0; i < 300 && !serverEnd; i++) await sleep(10);
      assert.equal(serverEnd?.code, Code.Unavailable, serverEnd?.message);
      assert.ok(Date.now() - t0 < 5000, `noticed after ${Date.now() - t0} ms`);
      // and once both sides reconnected (each on its own schedule), the bus works again
      const back = (nc: NatsConnection) => nc.flush().then(() => true, () => false);
      for (let i = 0; i < 100 && !((await back(snc)) && (await back(cnc))); i++) await sleep(50);
      const again = await client.open(rpcSubject('r', 'restart', 'Read'), 'server', ReadReq.encode({ digest: 'x' }));
      assert.equal(ReadRes.decode((await again.recv())!).offset, 0);
      again.cancel();
      await server.stop();
    } finally {
      await snc.close();
      await cnc.close();
      await natsd.stop();
      rmSync(dir, { recursive: true, force: true });
    }
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
      const { NamespaceGuard, sealNamespace, releaseNamespace } = await import('./usage.js');
      const images = await BusServer.start(nc, { name: 'images', node: 'u' });
      new NamespaceGuard({ kinds: async (ns: string) => (ns === 'full' ? ['images'] : []) }).serve(images);
      const content = await BusServer.start(nc, { name: 'content', node: 'u' });
      const contentGuard = new NamespaceGuard({ kinds: async (ns: string) => (ns === 'full' ? ['blobs'] : []) });
      contentGuard.serve(content);
      await nc.flush();
      const client = new BusClient(nc);
      assert.deepEqual(await sealNamespace(client, 'u', ['content', 'images', 'gateway'], 'full'), ['images', 'blobs']);
      // sealed: a write waits for the release
      let wrote = false;
      const write = contentGuard.write('full', async () => void (wrote = true));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(wrote, false);
      await releaseNamespace(client, 'u', ['content', 'images'], 'full', false);
      await write;
      assert.equal(wrote, true);
      assert.deepEqual(await sealNamespace(client, 'u', ['content', 'images'], 'empty'), []);
      await releaseNamespace(client, 'u', ['content', 'images'], 'empty', true);
      // a data-holding service the node runs but that does not answer: no verdict
      await assert.rejects(sealNamespace(client, 'u', ['content', 'containers'], 'empty'), (e: BerthError) => e.code === Code.Unavailable && /containers service not running/.test(e.message));
      await images.stop();
      await content.stop();
    } finally {
      await nc.close();
      await natsd.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
