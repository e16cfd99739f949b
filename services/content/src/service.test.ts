// The content service over a real nats-server, called the way the gateway calls it: protobuf
// bytes on `berth.<node>.content.v1.<Method>`, context in headers, streams with flow control.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { codec } from '@berth/api';
import { BusClient, decodeEnvelope, ensureEventStream, releaseNamespace, rpcSubject, sealNamespace, type CallContext } from '@berth/bus';
import { BerthError, Code } from '@berth/errdefs';
import { defaultConfig, type Stop } from '@berth/kit';
import { blobFile } from './client.js';
import { start } from './service.js';
import { bytes } from './testutil.js';

const C = (m: string) => codec(`containerd.services.content.v1.${m}`);
const node = 'unit.node';
const subj = (m: string) => rpcSubject(node, 'content', m);
const sha256 = (b: Uint8Array | string) => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe('content service over NATS', () => {
  let dir: string;
  let natsd: NatsServer;
  let snc: NatsConnection;
  let cnc: NatsConnection;
  let stop: Stop;
  let bus: BusClient;
  const ctx: CallContext = { namespace: 'default' };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-content-svc-'));
    natsd = await startNatsServer({ dir: join(dir, 'nats') });
    snc = await connect({ servers: natsd.url });
    cnc = await connect({ servers: natsd.url });
    await ensureEventStream(cnc, { maxAgeNs: 0, maxBytes: 1 << 26 });
    // a node without a leases service: leases are recorded on trust (the stack test checks them)
    stop = await start({ name: 'content', config: { ...defaultConfig(), services: ['content'] }, node, nc: snc, root: join(dir, 'content') });
    await snc.flush(); // the endpoints are live once the server has seen them
    bus = new BusClient(cnc);
  });

  after(async () => {
    await stop?.();
    await snc?.close();
    await cnc?.close();
    await natsd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function unary(m: string, reqType: string, resType: string, req: Record<string, unknown>, c: CallContext = ctx) {
    return C(resType).decode(await bus.unary(subj(m), C(reqType).encode(req), c));
  }

  /** One Write stream, request then answer, like containerd's remote writer. */
  async function write(reqs: Record<string, unknown>[], c: CallContext = ctx) {
    const ch = await bus.open(subj('Write'), 'bidi', undefined, c);
    const res = [];
    for (const r of reqs) {
      await ch.send(C('WriteContentRequest').encode(r));
      res.push(C('WriteContentResponse').decode((await ch.recv())!));
    }
    ch.end();
    while ((await ch.recv()) !== undefined);
    return res;
  }

  test('write, info, read, list, delete with its event', async () => {
    const data = Buffer.from('over the bus');
    const d = sha256(data);
    const events: { namespace: string; topic: string }[] = [];
    const sub = cnc.subscribe('berth.events.*.content.>', { callback: (_e, m) => void events.push(decodeEnvelope(m.data)) });
    const res = await write([
      { action: 'STAT', ref: 'bus-1', total: data.length, expected: d },
      { action: 'COMMIT', offset: 0, data, total: data.length, expected: d, labels: { via: 'nats' } },
    ]);
    assert.deepEqual(res.map((r) => [r.action, r.offset, r.digest]), [['STAT', 0, sha256('')], ['COMMIT', data.length, d]]);
    const info = await unary('Info', 'InfoRequest', 'InfoResponse', { digest: d });
    assert.deepEqual([info.info.digest, info.info.size, info.info.labels], [d, data.length, { via: 'nats' }]);
    const rd = await bus.open(subj('Read'), 'server', C('ReadContentRequest').encode({ digest: d, offset: 5 }), ctx);
    const got = [];
    for await (const m of rd) got.push(Buffer.from(C('ReadContentResponse').decode(m).data));
    assert.equal(Buffer.concat(got).toString(), 'the bus');
    const ls = await bus.open(subj('List'), 'server', C('ListContentRequest').encode({ filters: ['labels.via==nats'] }), ctx);
    const listed = [];
    for await (const m of ls) listed.push(...C('ListContentResponse').decode(m).info.map((i: { digest: string }) => i.digest));
    assert.deepEqual(listed, [d]);
    assert.deepEqual(await sealNamespace(bus, node, ['content'], 'default'), ['blobs']);
    await releaseNamespace(bus, node, ['content'], 'default', false);
    await bus.unary(subj('Delete'), C('DeleteContentRequest').encode({ digest: d }), ctx);
    assert.deepEqual(await sealNamespace(bus, node, ['content'], 'default'), []);
    await releaseNamespace(bus, node, ['content'], 'default', false);
    for (let i = 0; i < 50 && !events.length; i++) await new Promise((r) => setTimeout(r, 10));
    sub.unsubscribe();
    assert.deepEqual(events.map((e) => [e.namespace, e.topic]), [['default', '/content/delete']]);
  });

  test('errors keep containerd codes and messages across the bus', async () => {
    await assert.rejects(unary('Info', 'InfoRequest', 'InfoResponse', { digest: sha256('none') }), (e: BerthError) => e.code === Code.NotFound && e.message === `content digest ${sha256('none')}: not found`);
    await assert.rejects(unary('Info', 'InfoRequest', 'InfoResponse', { digest: 'x' }), (e: BerthError) => e.code === Code.InvalidArgument && e.message === '"x" failed validation');
    await assert.rejects(unary('Status', 'StatusRequest', 'StatusResponse', { ref: 'r' }), (e: BerthError) => e.code === Code.NotFound);
    await assert.rejects(write([{ action: 'STAT' }]), (e: BerthError) => e.code === Code.InvalidArgument && /first message must have a reference/.test(e.message));
    // two writers on one ref
    const a = await bus.open(subj('Write'), 'bidi', undefined, ctx);
    await a.send(C('WriteContentRequest').encode({ action: 'STAT', ref: 'locked' }));
    await a.recv();
    await assert.rejects(write([{ action: 'STAT', ref: 'locked' }]), (e: BerthError) => e.code === Code.Unavailable && /^ref default\/1\/locked locked for .*: unavailable$/.test(e.message));
    a.end();
    while ((await a.recv()) !== undefined);
  });

  test('a write cut off resumes from Status; the fast path finds the file', async () => {
    const data = bytes(5 * (1 << 20) + 3);
    const d = sha256(data);
    const ch = await bus.open(subj('Write'), 'bidi', undefined, { ...ctx, lease: 'l1' });
    await ch.send(C('WriteContentRequest').encode({ action: 'STAT', ref: 'cut', total: data.length, expected: d }));
    await ch.recv();
    for (let o = 0; o < 3 << 20; o += 1 << 20) {
      await ch.send(C('WriteContentRequest').encode({ action: 'WRITE', offset: o, data: data.subarray(o, o + (1 << 20)) }));
      await ch.recv();
    }
    ch.cancel(); // the client dies
    // Status reports the offset at once; resuming waits until the service has noticed the
    // cancel and closed its writer (until then the ref is locked: Unavailable)
    const status = C('StatusResponse').decode(await bus.unary(subj('Status'), C('StatusRequest').encode({ ref: 'cut' }), ctx)).status;
    assert.equal(status.offset, 3 << 20);
    let resumedAt;
    for (let i = 0; i < 100 && resumedAt === undefined; i++) {
      try {
        resumedAt = (await write([{ action: 'STAT', ref: 'cut', total: data.length, expected: d }]))[0]!.offset;
      } catch (e) {
        if ((e as BerthError).code !== Code.Unavailable) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    assert.equal(resumedAt, 3 << 20);
    const reqs: Record<string, unknown>[] = [{ action: 'STAT', ref: 'cut', total: data.length, expected: d }];
    for (let o = 3 << 20; o < data.length; o += 1 << 20) reqs.push({ action: 'WRITE', offset: o, data: data.subarray(o, o + (1 << 20)) });
    reqs.push({ action: 'COMMIT', offset: data.length, total: data.length, expected: d });
    const res = await write(reqs, { ...ctx, lease: 'l1' });
    assert.equal(res.at(-1)!.digest, d);
    const file = await blobFile(bus, node, d, ctx);
    assert.equal(file.size, data.length);
    assert.ok(readFileSync(file.path).equals(data));
    await assert.rejects(blobFile(bus, node, d, { namespace: 'other' }), (e: BerthError) => e.code === Code.NotFound);
  });

  test('a large blob streams both ways with bounded memory', async (t) => {
    const size = 192 << 20;
    const chunk = 1 << 20;
    const block = bytes(chunk, 3);
    const h = createHash('sha256');
    for (let o = 0; o < size; o += chunk) h.update(block);
    const d = 'sha256:' + h.digest('hex');
    let peak = 0;
    const base = process.memoryUsage().rss;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss - base)), 5);
    try {
      const ch = await bus.open(subj('Write'), 'bidi', undefined, ctx);
      await ch.send(C('WriteContentRequest').encode({ action: 'STAT', ref: 'big', total: size, expected: d }));
      await ch.recv();
      // pipelined like a fast client: keep sending, read the answers as they come
      const answers = (async () => {
        let n = 0;
        while ((await ch.recv()) !== undefined) n++;
        return n;
      })();
      for (let o = 0; o < size; o += chunk) await ch.send(C('WriteContentRequest').encode({ action: 'WRITE', offset: o, data: block }));
      await ch.send(C('WriteContentRequest').encode({ action: 'COMMIT', offset: size, total: size, expected: d }));
      ch.end();
      assert.equal(await answers, size / chunk + 2);
      const rd = await bus.open(subj('Read'), 'server', C('ReadContentRequest').encode({ digest: d }), ctx);
      const rh = createHash('sha256');
      let n = 0;
      for await (const m of rd) {
        const data = C('ReadContentResponse').decode(m).data as Uint8Array;
        rh.update(data);
        n += data.length;
      }
      assert.equal(n, size);
      assert.equal('sha256:' + rh.digest('hex'), d);
    } finally {
      clearInterval(sampler);
    }
    t.diagnostic(`rss grew by at most ${(peak / 2 ** 20).toFixed(0)} MiB moving ${size >> 20} MiB each way`);
    // client and service share this process: both directions' windows, a few MiB each
    assert.ok(peak < 150 << 20, `rss grew by ${(peak / 2 ** 20).toFixed(0)} MiB for a ${size >> 20} MiB blob`);
  });
});
