// The gateway's read cache (services/gateway/src/readcache.ts, @berth/bus changes.ts) against a
// real stack: reads answered by the gateway are never older than a write whose answer a client
// has, from one client or two at once, across a service killed between commit and notice, and
// across nats-server restarting under the gateway. The gateway's counters (asked on NATS with its
// own credentials) show that hits happened, without any timing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { NatsConnection } from '@nats-io/nats-core';
import { codec, method } from '@berth/api';
import { ctr, natsWith, startStack, until, type Stack } from './harness.js';
import { metadata, unary, writeBlob, type GrpcError } from './grpc.js';

const C = (m: string) => `/containerd.services.content.v1.Content/${m}`;
const K = (m: string) => `/containerd.services.containers.v1.Containers/${m}`;
const S = (m: string) => `/containerd.services.snapshots.v1.Snapshots/${m}`;
/** the snapshotter of the snapshot tests' requests */
const sn = { snapshotter: 'overlayfs' };
const node = 'it-node';
const id = (b: Buffer) => b;

interface Stats {
  hits: number;
  misses: number;
  kept: number;
  cleared: number;
  seeded: number;
  entries: number;
}

/** A gRPC client on one connection, as ctr keeps one. */
function client(sock: string) {
  const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
  const call = (path: string, req: Record<string, unknown>, md: grpc.Metadata): Promise<any> => {
    const m = method(path);
    return new Promise((resolve, reject) => {
      c.makeUnaryRequest(path, id, id, Buffer.from(codec(m.requestType).encode(req)), md, { deadline: Date.now() + 20_000 }, (e, r) => {
        if (e) reject(Object.assign(new Error(`${path}: ${e.code} ${e.details}`), { code: e.code }));
        else resolve(codec(m.responseType).decode(r!));
      });
    });
  };
  return { call, close: () => c.close() };
}

const digestOf = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe('gateway read cache', { timeout: 300_000 }, () => {
  let stack: Stack;
  let nc: NatsConnection;
  const faults = join('/tmp', `berth-readcache-faults-${process.pid}`);

  before(async () => {
    stack = await startStack({ env: { BERTH_FAULTS_FILE: faults } });
    // the gateway's own user: the only one that may ask for its counters
    nc = await natsWith(stack.natsUrl, stack.credentials('gateway'), { maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  });
  after(async () => {
    await nc?.close();
    await stack?.stop();
  });

  const stats = async (): Promise<Stats> => (await nc.request(`$SRV.CACHE.berth-gateway.${node}`, '', { timeout: 5000 })).json<Stats>();

  /** Metadata of calls under a new lease `lease` in `ns`: what they make, the collector leaves alone. */
  async function leased(ns: string, lease: string): Promise<grpc.Metadata> {
    await unary(stack.sock, '/containerd.services.leases.v1.Leases/Create', { id: lease }, metadata(ns));
    return metadata(ns, lease);
  }

  /** A blob in `ns`, written under a lease so the collector leaves it alone. */
  async function blob(ns: string, text: string): Promise<string> {
    const data = Buffer.from(text);
    const dg = digestOf(data);
    await unary(stack.sock, '/containerd.services.leases.v1.Leases/Create', { id: 'keep' }, metadata(ns)).catch((e: GrpcError) => assert.equal(e.code, 6, e.details));
    assert.equal(await writeBlob(stack.sock, metadata(ns, 'keep'), `ref-${text}`, data, dg), 'ok');
    return dg;
  }

  test('Info after an Update sees the new labels, every time, from two clients at once; repeated Infos are hits', async () => {
    const ns = 'rc-loop';
    const dg = await blob(ns, 'loop blob');
    const md = metadata(ns);
    const before = await stats();
    const one = async (who: string) => {
      const c = client(stack.sock);
      try {
        for (let i = 0; i < 150; i++) {
          const v = `${who}-${i}`;
          await c.call(C('Update'), { info: { digest: dg, labels: { [who]: v } }, update_mask: { paths: [`labels.${who}`] } }, md);
          // the first read may go to the service, the second may be answered by the gateway: both
          // must show this client's write
          for (let r = 0; r < 2; r++) {
            const got = (await c.call(C('Info'), { digest: dg }, md)).info.labels[who];
            assert.equal(got, v, `${who}: read ${r} after write ${i}`);
          }
        }
      } finally {
        c.close();
      }
    };
    await Promise.all([one('a'), one('b')]);
    const s = await stats();
    assert.ok(s.hits > before.hits, `some reads were answered by the gateway: ${JSON.stringify(s)}`);
    assert.ok(s.cleared > before.cleared, 'and its copies were dropped at the writes');
  });

  test('Namespaces.Get and Images.Get after an Update see the new labels; repeated ones are hits', async () => {
    const N = (m: string) => `/containerd.services.namespaces.v1.Namespaces/${m}`;
    const I = (m: string) => `/containerd.services.images.v1.Images/${m}`;
    const ns = 'rc-records';
    const dg = await blob(ns, 'image target');
    const md = metadata(ns);
    const c = client(stack.sock);
    try {
      await c.call(N('Create'), { namespace: { name: 'rc-labelled', labels: {} } }, md);
      const target = { media_type: 'application/vnd.oci.image.manifest.v1+json', digest: dg, size: 12 };
      await c.call(I('Create'), { image: { name: 'rc/image:1', labels: {}, target } }, md);
      const h0 = (await stats()).hits;
      for (let i = 0; i < 30; i++) {
        await c.call(N('Update'), { namespace: { name: 'rc-labelled', labels: { v: `${i}` } }, update_mask: { paths: ['labels.v'] } }, md);
        await c.call(I('Update'), { image: { name: 'rc/image:1', labels: { v: `${i}` }, target }, update_mask: { paths: ['labels.v'] } }, md);
        for (let r = 0; r < 2; r++) {
          assert.equal((await c.call(N('Get'), { name: 'rc-labelled' }, md)).namespace.labels.v, `${i}`, `namespace, read ${r} after write ${i}`);
          assert.equal((await c.call(I('Get'), { name: 'rc/image:1' }, md)).image.labels.v, `${i}`, `image, read ${r} after write ${i}`);
        }
      }
      assert.ok((await stats()).hits >= h0 + 30, 'the second reads were hits');
    } finally {
      c.close();
    }
  });

  test('Containers.Get and Snapshots.Stat/Mounts after their writes see them; a removed one is NotFound; repeated reads are hits', async () => {
    // under a lease: an active snapshot nothing else holds is the collector's to take
    const md = await leased('rc-run', 'rc-keep');
    const c = client(stack.sock);
    const code = (p: Promise<unknown>) => p.then(() => 0, (e: { code: number }) => e.code);
    try {
      const h0 = (await stats()).hits;
      for (let i = 0; i < 20; i++) {
        const key = `rc-snap-${i}`;
        // the path of a run: prepare, read its mounts twice, then remove it
        const prepared = await c.call(S('Prepare'), { snapshotter: 'overlayfs', key, parent: '', labels: {} }, md);
        for (let r = 0; r < 2; r++) {
          assert.deepEqual((await c.call(S('Mounts'), { snapshotter: 'overlayfs', key }, md)).mounts, prepared.mounts, `mounts, read ${r} of ${key}`);
          assert.equal((await c.call(S('Stat'), { snapshotter: 'overlayfs', key }, md)).info.name, key);
        }
        await c.call(S('Remove'), { snapshotter: 'overlayfs', key }, md);
        assert.equal(await code(c.call(S('Stat'), { snapshotter: 'overlayfs', key }, md)), grpc.status.NOT_FOUND, `${key} removed`);
        assert.equal(await code(c.call(S('Mounts'), { snapshotter: 'overlayfs', key }, md)), grpc.status.NOT_FOUND, `${key} has no mounts`);

        const container = { id: 'rc-c', image: 'img', labels: { v: `${i}` }, runtime: { name: 'io.containerd.runc.v2' }, spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Spec', value: Buffer.from('{}') } };
        if (i === 0) await c.call(K('Create'), { container }, md);
        else await c.call(K('Update'), { container, update_mask: { paths: ['labels.v'] } }, md);
        for (let r = 0; r < 2; r++) assert.equal((await c.call(K('Get'), { id: 'rc-c' }, md)).container.labels.v, `${i}`, `container, read ${r} after write ${i}`);
      }
      await c.call(K('Delete'), { id: 'rc-c' }, md);
      assert.equal(await code(c.call(K('Get'), { id: 'rc-c' }, md)), grpc.status.NOT_FOUND, 'deleted');
      assert.ok((await stats()).hits >= h0 + 40, 'the second reads were hits');
    } finally {
      c.close();
    }
  });

  test("a snapshot's Stat stays kept while other snapshots come and go; its own Update and Remove are seen at once", async () => {
    const md = await leased('rc-rec', 'rec-keep');
    const c = client(stack.sock);
    try {
      // an image's layer, as a run finds it: committed, and the parent of each run's snapshot
      await c.call(S('Prepare'), { ...sn, key: 'layer-active', parent: '', labels: {} }, md);
      await c.call(S('Commit'), { ...sn, name: 'layer', key: 'layer-active', labels: {} }, md);
      const stat = async () => (await c.call(S('Stat'), { ...sn, key: 'layer' }, md)).info;
      assert.equal((await stat()).name, 'layer');
      const s0 = await stats();
      for (let i = 0; i < 5; i++) {
        // the path of ctr run: is the layer there, a snapshot on it, and later that one's removal
        assert.equal((await stat()).kind, 'COMMITTED');
        await c.call(S('Prepare'), { ...sn, key: `run-${i}`, parent: 'layer', labels: {} }, md);
        assert.equal((await stat()).name, 'layer');
        await c.call(S('Remove'), { ...sn, key: `run-${i}` }, md);
      }
      const s1 = await stats();
      assert.equal(s1.misses - s0.misses, 0, 'no Stat of the layer went to the service');
      assert.ok(s1.hits - s0.hits >= 10, `every Stat a hit (${s1.hits - s0.hits})`);
      await c.call(S('Update'), { ...sn, info: { name: 'layer', labels: { seen: 'yes' } }, update_mask: { paths: ['labels.seen'] } }, md);
      assert.equal((await stat()).labels.seen, 'yes', 'its own change is seen at once');
      await c.call(S('Remove'), { ...sn, key: 'layer' }, md);
      await assert.rejects(stat(), (e: { code: number }) => e.code === grpc.status.NOT_FOUND);
    } finally {
      c.close();
    }
  });

  test('Stat of two snapshots from two clients at once, each updating its own while preparing and removing others: every read sees its own last write', async () => {
    const md = await leased('rc-race', 'rec-race');
    const setup = client(stack.sock);
    for (const who of ['a', 'b']) {
      await setup.call(S('Prepare'), { ...sn, key: `${who}-active`, parent: '', labels: {} }, md);
      await setup.call(S('Commit'), { ...sn, name: `${who}-layer`, key: `${who}-active`, labels: {} }, md);
    }
    setup.close();
    const before = await stats();
    const one = async (who: string, other: string) => {
      const c = client(stack.sock);
      try {
        for (let i = 0; i < 60; i++) {
          const v = `${who}-${i}`;
          await c.call(S('Update'), { ...sn, info: { name: `${who}-layer`, labels: { v } }, update_mask: { paths: ['labels.v'] } }, md);
          // a snapshot on the other client's layer comes and goes meanwhile: its notices name other records
          await c.call(S('Prepare'), { ...sn, key: `${who}-run-${i}`, parent: `${other}-layer`, labels: {} }, md);
          for (let r = 0; r < 2; r++) {
            assert.equal((await c.call(S('Stat'), { ...sn, key: `${who}-layer` }, md)).info.labels.v, v, `${who}: read ${r} after write ${i}`);
          }
          await c.call(S('Remove'), { ...sn, key: `${who}-run-${i}` }, md);
        }
      } finally {
        c.close();
      }
    };
    await Promise.all([one('a', 'b'), one('b', 'a')]);
    const after = await stats();
    assert.ok(after.hits > before.hits, `some Stats were answered by the gateway: ${JSON.stringify(after)}`);
  });

  /** One Content.Read of a whole blob: its bytes, or the status code it failed with. */
  function read(dg: string, ns: string): Promise<Buffer | number> {
    const RReq = codec('containerd.services.content.v1.ReadContentRequest');
    const RRes = codec('containerd.services.content.v1.ReadContentResponse');
    const c = new grpc.Client(`unix:${stack.sock}`, grpc.credentials.createInsecure());
    return new Promise<Buffer | number>((resolve) => {
      const call = c.makeServerStreamRequest(C('Read'), id, id, Buffer.from(RReq.encode({ digest: dg })), metadata(ns));
      const parts: Buffer[] = [];
      call.on('data', (b: Buffer) => parts.push(Buffer.from(RRes.decode(b).data)));
      call.on('error', (e: grpc.ServiceError) => resolve(e.code));
      call.on('end', () => resolve(Buffer.concat(parts)));
    }).finally(() => c.close());
  }

  test('Read: repeated Reads of a blob take its place from the cache; once deleted, or in another namespace, it is NotFound', async () => {
    const ns = 'rc-read';
    const text = 'a blob read again and again';
    const dg = await blob(ns, text);
    const h0 = (await stats()).hits;
    for (let i = 0; i < 4; i++) assert.equal(String(await read(dg, ns)), text, `read ${i}`);
    assert.ok((await stats()).hits >= h0 + 3, 'the later Reads found the blob without asking content');
    assert.equal(await read(dg, 'rc-read-other'), grpc.status.NOT_FOUND, 'not visible in a namespace that has not written it');
    await unary(stack.sock, C('Delete'), { digest: dg }, metadata(ns));
    assert.equal(await read(dg, ns), grpc.status.NOT_FOUND, 'deleted: no kept answer serves it');
    await blob(ns, text);
    assert.equal(String(await read(dg, ns)), text, 'written again: read again');
  });

  test('a write kept as a read (Create for Get, Prepare for Mounts) is never older than a write racing it', async () => {
    const md = await leased('rc-seed', 'rc-seed');
    const [a, b] = [client(stack.sock), client(stack.sock)];
    const spec = { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Spec', value: Buffer.from('{}') };
    try {
      const s0 = await stats();
      // alone: the read right after the write is answered from the write's answer
      for (let i = 0; i < 5; i++) {
        const created = await a.call(K('Create'), { container: { id: `alone-${i}`, image: 'img', labels: { v: 'created' }, runtime: { name: 'io.containerd.runc.v2' }, spec } }, md);
        assert.deepEqual((await a.call(K('Get'), { id: `alone-${i}` }, md)).container, created.container);
        const prepared = await a.call(S('Prepare'), { snapshotter: 'overlayfs', key: `alone-${i}`, parent: '', labels: {} }, md);
        assert.deepEqual((await a.call(S('Mounts'), { snapshotter: 'overlayfs', key: `alone-${i}` }, md)).mounts, prepared.mounts);
      }
      const s1 = await stats();
      assert.ok(s1.seeded >= s0.seeded + 10, `the writes' answers were kept: ${JSON.stringify(s1)}`);
      assert.ok(s1.hits >= s0.hits + 10, 'and the reads after them were answered from them');
      // raced: b updates the container as soon as it exists; once b has its answer, no read shows
      // the Create's labels any more, wherever it is answered
      for (let i = 0; i < 40; i++) {
        const id = `raced-${i}`;
        const creating = a.call(K('Create'), { container: { id, image: 'img', labels: { v: 'created' }, runtime: { name: 'io.containerd.runc.v2' }, spec } }, md);
        let updated = false;
        while (!updated) {
          updated = await b.call(K('Update'), { container: { id, labels: { v: 'updated' } }, update_mask: { paths: ['labels.v'] } }, md).then(
            () => true,
            (e: { code: number }) => (assert.equal(e.code, grpc.status.NOT_FOUND), false),
          );
        }
        await creating;
        for (const c of [a, b]) assert.equal((await c.call(K('Get'), { id }, md)).container.labels.v, 'updated', `${id} after the update`);
      }
    } finally {
      a.close();
      b.close();
    }
  });

  test('the same digest in two namespaces keeps each its own labels', async () => {
    const text = 'shared digest';
    const [d1, d2] = [await blob('rc-ns1', text), await blob('rc-ns2', text)];
    assert.equal(d1, d2);
    const c = client(stack.sock);
    try {
      await c.call(C('Update'), { info: { digest: d1, labels: { who: 'one' } }, update_mask: { paths: ['labels.who'] } }, metadata('rc-ns1'));
      await c.call(C('Update'), { info: { digest: d1, labels: { who: 'two' } }, update_mask: { paths: ['labels.who'] } }, metadata('rc-ns2'));
      const h0 = (await stats()).hits;
      for (let i = 0; i < 3; i++) {
        assert.equal((await c.call(C('Info'), { digest: d1 }, metadata('rc-ns1'))).info.labels.who, 'one');
        assert.equal((await c.call(C('Info'), { digest: d1 }, metadata('rc-ns2'))).info.labels.who, 'two');
      }
      assert.ok((await stats()).hits >= h0 + 4, 'the repeated reads were hits, each of its own namespace');
      // NotFound is never kept: the blob written afterwards is seen at once
      const fresh = Buffer.from('written after a miss');
      await assert.rejects(c.call(C('Info'), { digest: digestOf(fresh) }, metadata('rc-ns1')), /5 /);
      await blob('rc-ns1', 'written after a miss');
      assert.equal(Number((await c.call(C('Info'), { digest: digestOf(fresh) }, metadata('rc-ns1'))).info.size), fresh.length);
    } finally {
      c.close();
    }
  });

  test('content killed between commit and its end notice: after the restart no read shows the old labels', async () => {
    const ns = 'rc-crash';
    const dg = await blob(ns, 'crash blob');
    const md = metadata(ns);
    const c = client(stack.sock);
    try {
      await c.call(C('Update'), { info: { digest: dg, labels: { v: 'old' } }, update_mask: { paths: ['labels.v'] } }, md);
      await c.call(C('Info'), { digest: dg }, md);
      const h0 = (await stats()).hits;
      assert.equal((await c.call(C('Info'), { digest: dg }, md)).info.labels.v, 'old');
      assert.equal((await stats()).hits, h0 + 1, 'the old labels are in the cache');
      const pid = stack.pid('content');
      writeFileSync(faults, 'changes:before-end');
      // the write is committed, then the process dies: its caller learns nothing
      await assert.rejects(c.call(C('Update'), { info: { digest: dg, labels: { v: 'new' } }, update_mask: { paths: ['labels.v'] } }, md));
      await until(async () => stack.pid('content') !== pid, 30_000, 'content restarted');
      let last: unknown;
      await until(
        async () => {
          try {
            await c.call(C('Info'), { digest: dg }, md);
            return true;
          } catch (e) {
            last = e;
            return false;
          }
        },
        30_000,
        'content serving again',
      ).catch((e: Error) => {
        throw new Error(`${e.message}: ${String(last)}\n${stack.output().slice(-3000)}`);
      });
      for (let i = 0; i < 5; i++) assert.equal((await c.call(C('Info'), { digest: dg }, md)).info.labels.v, 'new', `read ${i} after the restart`);
      assert.ok((await stats()).hits > h0 + 1, 'and the new labels are answered by the gateway again');
    } finally {
      c.close();
    }
  });

  test('snapshot killed between an Update of one record and its end notice: after the restart that Stat shows the new labels, the other the same', async () => {
    const md = await leased('rc-snap-crash', 'keep');
    const c = client(stack.sock);
    try {
      for (const k of ['a', 'b']) {
        await c.call(S('Prepare'), { ...sn, key: `${k}-active`, parent: '', labels: {} }, md);
        await c.call(S('Commit'), { ...sn, name: k, key: `${k}-active`, labels: { v: 'old' } }, md);
      }
      const label = async (k: string) => (await c.call(S('Stat'), { ...sn, key: k }, md)).info.labels.v;
      for (const k of ['a', 'b', 'a', 'b']) assert.equal(await label(k), 'old');
      const pid = stack.pid('snapshot');
      writeFileSync(faults, 'changes:before-end');
      // committed, then the process dies before the end notice: its caller learns nothing
      await assert.rejects(c.call(S('Update'), { ...sn, info: { name: 'a', labels: { v: 'new' } }, update_mask: { paths: ['labels.v'] } }, md));
      await until(async () => stack.pid('snapshot') !== pid, 30_000, 'snapshot restarted');
      await until(async () => label('b').then(() => true, () => false), 30_000, 'snapshot serving again');
      for (let i = 0; i < 3; i++) {
        assert.equal(await label('a'), 'new', `a, read ${i} after the restart`);
        assert.equal(await label('b'), 'old', `b, read ${i} after the restart`);
      }
    } finally {
      c.close();
    }
  });

  test("content killed mid-Delete of a blob whose place the gateway keeps: after the restart its Read is NotFound", async () => {
    const ns = 'rc-crash-read';
    const dg = await blob(ns, 'read then deleted in a crash');
    for (let i = 0; i < 2; i++) assert.equal(String(await read(dg, ns)), 'read then deleted in a crash');
    const pid = stack.pid('content');
    writeFileSync(faults, 'changes:before-end');
    // the delete is committed, then the process dies before its end notice
    await assert.rejects(unary(stack.sock, C('Delete'), { digest: dg }, metadata(ns)));
    await until(async () => stack.pid('content') !== pid, 30_000, 'content restarted');
    await until(async () => (await read(dg, ns)) === grpc.status.NOT_FOUND, 30_000, 'the deleted blob is NotFound');
    for (let i = 0; i < 3; i++) assert.equal(await read(dg, ns), grpc.status.NOT_FOUND, `read ${i} after the restart`);
  });

  test('nats-server restarted under the gateway: the copies are dropped, and kept again afterwards', async () => {
    const ns = 'rc-nats';
    const dg = await blob(ns, 'nats blob');
    const md = metadata(ns);
    const c = client(stack.sock);
    try {
      await c.call(C('Info'), { digest: dg }, md);
      await c.call(C('Info'), { digest: dg }, md);
      const s0 = await stats();
      assert.ok(s0.entries > 0);
      process.kill(stack.pid('nats-server'), 'SIGKILL');
      await until(async () => (await ctr(stack.sock, '-n', ns, 'content', 'ls')).code === 0, 30_000, 'the stack serving again after nats-server restarted');
      const s1 = await stats();
      assert.ok(s1.entries < s0.entries || s1.misses > s0.misses, `dropped: ${JSON.stringify(s0)} then ${JSON.stringify(s1)}`);
      const m0 = s1.misses;
      await c.call(C('Info'), { digest: dg }, md);
      const s2 = await stats();
      assert.equal(s2.misses, m0 + 1, 'the first read after the restart went to the service');
      await c.call(C('Info'), { digest: dg }, md);
      assert.equal((await stats()).hits, s2.hits + 1, 'the next one was a hit');
    } finally {
      c.close();
    }
  });
  test('a service may publish only its own notices, and only the gateway may read them', async () => {
    const images = await natsWith(stack.natsUrl, stack.credentials('images'));
    const errors: string[] = [];
    void (async () => {
      for await (const st of images.status()) if (st.type === 'error') errors.push(String((st as { error: unknown }).error));
    })();
    try {
      images.publish(`berth.changes.${node}.images`, 'x.1');
      await images.flush();
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(errors, [], 'its own notices');
      images.publish(`berth.changes.${node}.content`, 'x.1');
      await images.flush();
      await until(async () => errors.length > 0, 5000, 'a violation reported');
      assert.match(errors.join(' '), /Permissions Violation for Publish to "berth\.changes\.it-node\.content"/);
    } finally {
      await images.close();
    }
    for (const who of ['subscriber', 'content']) {
      const c = await natsWith(stack.natsUrl, stack.credentials(who));
      try {
        const sub = c.subscribe(`berth.changes.${node}.*`);
        await assert.rejects(
          Promise.race([
            (async () => {
              for await (const _ of sub) return;
            })(),
            new Promise((r) => setTimeout(r, 5000)),
          ]),
          /Permissions Violation for Subscription/,
          who,
        );
      } finally {
        await c.close();
      }
    }
  });
});
