// Container records end to end: the real `ctr containers` and a Go-client-like gRPC client
// against the stack and the reference containerd 1.6.20 in the same run, comparing what each
// prints and answers; events on `ctr events` and in the history; one winner among concurrent
// creates; a namespace that holds containers cannot be deleted.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { codec, specToAny } from '@berth/api';
import { ctr, repo, run, sleep, startReference, startStack, until, type Reference, type Stack } from './harness.js';
import { metadata, outcome, unary } from './grpc.js';

const C = (m: string) => `/containerd.services.containers.v1.Containers/${m}`;
const runc = 'io.containerd.runc.v2';
const spec = specToAny({ ociVersion: '1.0.2-dev', process: { args: ['sh'], cwd: '/' }, root: { path: 'rootfs' } });
const container = (id: string, more: Record<string, unknown> = {}) => ({ id, runtime: { name: runc }, spec, ...more });

/** ListStream as the Go client reads it: every message it got. */
function listStream(sock: string, ns: string, filters: string[] = []): Promise<{ container: { id: string } }[]> {
  const Req = codec('containerd.services.containers.v1.ListContainersRequest');
  const Msg = codec('containerd.services.containers.v1.ListContainerMessage');
  const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
  return new Promise<{ container: { id: string } }[]>((resolve, reject) => {
    const got: { container: { id: string } }[] = [];
    const call = c.makeServerStreamRequest(C('ListStream'), (b: Buffer) => b, (b: Buffer) => b, Buffer.from(Req.encode({ filters })), metadata(ns), {});
    call.on('data', (b: Buffer) => got.push(Msg.decode(b)));
    call.on('error', (e: grpc.ServiceError) => reject({ code: e.code, details: e.details }));
    call.on('end', () => resolve(got));
  }).finally(() => c.close());
}

/** `ctr events` in the background: the lines it printed for containers, and a stop. */
function watchEvents(sock: string) {
  const p = spawn('ctr', ['--address', sock, 'events'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (b) => (out += b));
  return {
    // ctr events prints: DATE TIME OFFSET ZONE NAMESPACE TOPIC EVENT; keep NAMESPACE TOPIC EVENT
    lines: () => out.split('\n').filter((l) => l.includes(' /containers/')).map((l) => l.split(' ').slice(4).join(' ')),
    stop: () => p.kill('SIGTERM'),
  };
}

describe('containers', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  const dir = mkdtempSync('/tmp/berth-containers-');
  const rootfs = join(dir, 'rootfs');

  before(async () => {
    mkdirSync(rootfs);
    [stack, ref] = await Promise.all([startStack(), startReference()]);
  });

  after(async () => {
    await stack?.stop();
    await ref?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const socks = () => [stack.sock, ...(ref ? [ref.sock] : [])];
  /** Runs `fn` on Berth and on the reference; asserts both gave the same, returns Berth's. */
  const same = async <T>(what: string, fn: (sock: string) => Promise<T>): Promise<T> => {
    const got = [];
    for (const sock of socks()) got.push(await fn(sock));
    if (ref) assert.deepEqual(got[0], got[1], `${what}: Berth (first) and the reference (second) differ`);
    return got[0]!;
  };
  // ctr's log lines carry their time (`time="…"`): not part of what is compared
  const ctrOut = (sock: string, ...args: string[]) => ctr(sock, ...args).then((r) => `${r.code} ${r.stdout}${r.stderr.replace(/time="[^"]*"/g, 'time="-"')}`);

  test('ctr containers create/ls/info/label/rm, filters and errors: as against the reference', async () => {
    const ns = 'ctr-c';
    const n = (sock: string, ...args: string[]) => ctrOut(sock, '-n', ns, ...args);
    const created = await same('create', async (sock) => [
      await n(sock, 'containers', 'create', '--rootfs', '--label', 'tier=web', '--label', 'com.example.team=a', rootfs, 'web1', 'echo', 'hi'),
      await n(sock, 'containers', 'create', '--rootfs', '--label', 'tier=db', '--env', 'X=1', rootfs, 'db1'),
      await n(sock, 'containers', 'create', '--rootfs', '--runtime', 'io.containerd.runsc.v1', '--label', 'tier=web', rootfs, 'web2'),
    ]);
    assert.deepEqual(created, ['0 ', '0 ', '0 ']);
    const ls = await same('ls', (sock) => n(sock, 'containers', 'ls'));
    assert.match(ls, /^0 CONTAINER +IMAGE +RUNTIME +\ndb1 +- +io.containerd.runc.v2 +\nweb1 .*\nweb2 +- +io.containerd.runsc.v1 +\n$/);
    const filtered = await same('filters', async (sock) => {
      const out: Record<string, string> = {};
      for (const f of [
        'labels.tier==web',
        'labels."com.example.team"==a',
        'labels.com.example.team',
        'id==db1',
        'id~=^web',
        'runtime.name==io.containerd.runsc.v1',
        'labels.tier==web,runtime.name==io.containerd.runc.v2',
        'labels.tier!=web',
        'image',
        // in containerd 1.6 `|` quotes a value (as `/` does); it is not an "or"
        'id==web1|id==db1',
        'id~=|^w.b1$|',
        'id==|web1|',
      ]) {
        out[f] = await n(sock, 'containers', 'ls', '-q', f);
      }
      out['two filters, either'] = await n(sock, 'containers', 'ls', '-q', 'id==web1', 'id==db1');
      return out;
    });
    assert.equal(filtered['labels.tier==web'], '0 web1\nweb2\n');
    assert.equal(filtered['labels."com.example.team"==a'], '0 web1\n');
    assert.equal(filtered['labels.tier==web,runtime.name==io.containerd.runc.v2'], '0 web1\n');
    assert.equal(filtered['two filters, either'], '0 db1\nweb1\n');
    assert.equal(filtered['id~=|^w.b1$|'], '0 web1\n');

    // info: the spec ctr made comes back as it was sent; only the times differ
    const info = await same('info', async (sock) => {
      const r = await ctr(sock, '-n', ns, 'containers', 'info', 'web1');
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout);
      assert.match(j.CreatedAt, /^\d{4}-\d\d-\d\dT[\d:]+\.\d+Z$/);
      assert.equal(j.UpdatedAt, j.CreatedAt);
      delete j.CreatedAt;
      delete j.UpdatedAt;
      return j;
    });
    assert.deepEqual(info.Spec.process.args, ['echo', 'hi']);
    assert.equal(info.Spec.root.path, rootfs);
    assert.deepEqual(info.Labels, { tier: 'web', 'com.example.team': 'a' });

    // ctr prints the labels in Go's map order, which is random
    const sorted = (out: string) => {
      const [code, labels = ''] = out.trim().split(' ');
      return `${code} ${labels.split(',').sort().join(',')}`;
    };
    const labelled = await same('label', async (sock) => [
      sorted(await n(sock, 'containers', 'label', 'web1', 'tier=front', 'extra=1')),
      sorted(await n(sock, 'containers', 'label', 'web1', 'com.example.team=')),
      await n(sock, 'containers', 'ls', '-q', 'labels.tier==front'),
      JSON.parse((await ctr(sock, '-n', ns, 'containers', 'info', 'web1')).stdout).Labels,
    ]);
    assert.deepEqual(labelled.slice(2), ['0 web1\n', { tier: 'front', extra: '1' }]);

    const errors = await same('errors', async (sock) => [
      await n(sock, 'containers', 'create', '--rootfs', rootfs, 'web1'),
      await n(sock, 'containers', 'create', '--rootfs', rootfs, 'bad..id'),
      await n(sock, 'containers', 'create', '--rootfs', rootfs, '-x'.repeat(40)),
      await n(sock, 'containers', 'info', 'missing'),
      await n(sock, 'containers', 'rm', 'missing'),
      await n(sock, 'containers', 'label', 'missing', 'a=b'),
      await n(sock, 'containers', 'ls', 'id=='),
      await n(sock, 'containers', 'ls', 'labels."x'),
    ]);
    assert.match(errors[0]!, /container "web1": already exists/);
    assert.match(errors[1]!, /create container failed validation: container.ID: identifier "bad..id" must match/);

    // a namespace with containers stays
    const nsRm = await same('namespace rm', (sock) => ctrOut(sock, 'namespaces', 'rm', ns));
    assert.match(nsRm, /namespace "ctr-c" must be empty, but it still has containers/);
    const removed = await same('rm', async (sock) => [
      await n(sock, 'containers', 'rm', 'web1', 'web2'),
      await n(sock, 'containers', 'delete', 'db1'),
      await n(sock, 'containers', 'ls', '-q'),
      await ctrOut(sock, 'namespaces', 'rm', ns),
    ]);
    assert.deepEqual(removed, ['0 ', '0 ', '0 ', `0 ${ns}\n`]);
  });

  test('the gRPC API as the Go client uses it: ListStream, Update by field path, Any kept byte for byte, errors', async () => {
    const ns = 'grpc-c';
    const md = metadata(ns);
    const call = (sock: string, m: string, req: Record<string, unknown>) => unary(sock, C(m), req, md);
    const odd = { type_url: 'example.com/odd', value: Buffer.from([0, 255, 128, 10]) };
    const results = await same('grpc', async (sock) => {
      const r: Record<string, unknown> = {};
      // before any container exists in the namespace, containerd words misses differently
      r.updateFresh = await outcome(call(sock, 'Update', { container: container('nope') }));
      r.deleteFresh = await outcome(call(sock, 'Delete', { id: 'nope' }));
      const made = (await call(sock, 'Create', { container: container('g1', { labels: { a: '1', b: '2' }, snapshotter: 'overlayfs', snapshot_key: 'k', extensions: { odd } }) })).container;
      assert.deepEqual(made.updated_at, made.created_at);
      await call(sock, 'Create', { container: container('g2', { image: 'docker.io/library/busybox:latest' }) });
      r.stream = (await listStream(sock, ns)).map((m) => m.container.id);
      r.streamFiltered = (await listStream(sock, ns, ['image~=busybox'])).map((m) => m.container.id);
      r.streamBadFilter = await outcome(listStream(sock, ns, ['id==']));
      r.list = (await call(sock, 'List', { filters: ['labels.a==1'] })).containers.map((c: { id: string }) => c.id);
      const got = (await call(sock, 'Get', { id: 'g1' })).container;
      r.spec = [got.spec.type_url, Buffer.from(got.spec.value).toString('base64')];
      r.odd = [got.extensions.odd.type_url, Buffer.from(got.extensions.odd.value).toString('hex')];
      const paths = (p: string[]) => ({ paths: p });
      const upd = async (c: Record<string, unknown>, p: string[]) => {
        try {
          const u = (await call(sock, 'Update', { container: c, update_mask: paths(p) })).container;
          return { labels: u.labels, image: u.image, snapshot_key: u.snapshot_key, extensions: Object.keys(u.extensions).sort() };
        } catch (e) {
          return await outcome(Promise.reject(e));
        }
      };
      r.labelsDot = await upd(container('g1', { labels: { c: '3' } }), ['labels.c', 'labels.a']);
      r.image = await upd(container('g1', { image: 'x', snapshot_key: 'k2' }), ['image', 'snapshotkey']);
      r.snapshotter = await upd(container('g1', { snapshotter: 'native' }), ['snapshotter']);
      r.runtime = await upd(container('g1'), ['runtime']);
      r.unknownPath = await upd(container('g1'), ['created_at']);
      r.noSpec = await upd({ id: 'g1', runtime: { name: runc } }, ['spec']);
      r.immutable = await upd(container('g1', { snapshotter: 'native' }), []);
      r.immutableRuntime = await upd(container('g1', { snapshotter: 'overlayfs', runtime: { name: 'other' } }), []);
      r.replace = await upd(container('g1', { snapshotter: 'overlayfs', labels: { only: 'this' }, extensions: { other: odd } }), []);
      r.afterReplace = Object.keys((await call(sock, 'Get', { id: 'g1' })).container.extensions).sort();
      r.noId = await upd(container(''), []);
      r.missing = await upd(container('nope'), []);
      r.getMissing = await outcome(call(sock, 'Get', { id: 'nope' }));
      r.deleteMissing = await outcome(call(sock, 'Delete', { id: 'nope' }));
      r.createErrors = [
        await outcome(call(sock, 'Create', { container: { id: 'x', spec } })),
        await outcome(call(sock, 'Create', { container: { id: 'x', runtime: { name: runc } } })),
        await outcome(call(sock, 'Create', { container: container('x', { snapshot_key: 'k' }) })),
        await outcome(call(sock, 'Create', { container: container('x', { extensions: { '': odd } }) })),
        await outcome(call(sock, 'Create', { container: container('x', { labels: { k: 'v'.repeat(4100) } }) })),
        await outcome(call(sock, 'Create', { container: container('') })),
      ];
      r.noNamespace = await outcome(unary(sock, C('Get'), { id: 'g1' }));
      for (const id of ['g1', 'g2']) await call(sock, 'Delete', { id });
      return r;
    });
    assert.deepEqual(results.stream, ['g1', 'g2']);
    assert.deepEqual(results.streamFiltered, ['g2']);
    assert.deepEqual(results.odd, ['example.com/odd', '00ff800a']);
    assert.deepEqual(results.replace, { labels: { only: 'this' }, image: '', snapshot_key: '', extensions: ['other'] });
    assert.match(String(results.snapshotter), /^3 cannot update "snapshotter" field on "g1": invalid argument$/);
    assert.match(String(results.streamBadFilter), /^3 filters: parse error: \[id==\]: /);
    assert.match(String(results.updateFresh), /^5 cannot update container "nope" in namespace "grpc-c": not found$/);

    // nanosecond timestamps: of many creates, some stamp has nanoseconds that are not whole microseconds
    const stamps = [];
    for (let i = 0; i < 5; i++) stamps.push((await call(stack.sock, 'Create', { container: container(`t${i}`) })).container.created_at.nanos as number);
    assert.ok(stamps.some((x) => x % 1000 !== 0), `${stamps}`);
    for (let i = 0; i < 5; i++) await call(stack.sock, 'Delete', { id: `t${i}` });
  });

  test('events: /containers/create, update, delete on ctr events as on the reference, and in the history', async () => {
    const ns = 'ev-c';
    const seen = await same('events', async (sock) => {
      const w = watchEvents(sock);
      await sleep(1000); // ctr subscribes first
      await ctr(sock, '-n', ns, 'containers', 'create', '--rootfs', '--label', 'a=b', rootfs, 'e1');
      await ctr(sock, '-n', ns, 'containers', 'label', 'e1', 'c=d');
      await ctr(sock, '-n', ns, 'containers', 'rm', 'e1');
      await until(async () => w.lines().length >= 3, 10_000, `three container events on ${sock}`);
      w.stop();
      await ctr(sock, 'namespaces', 'rm', ns);
      return w.lines();
    });
    assert.deepEqual(seen, [
      `${ns} /containers/create {"id":"e1","runtime":{"name":"io.containerd.runc.v2","options":{"type_url":"containerd.runc.v1.Options"}}}`,
      `${ns} /containers/update {"id":"e1","labels":{"a":"b","c":"d"}}`,
      `${ns} /containers/delete {"id":"e1"}`,
    ]);
    const history = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', '1', '--json', `namespace==${ns}`]);
    const topics = history.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { topic: string; event: { id?: string } }).filter((e) => e.event.id === 'e1');
    assert.deepEqual(topics.map((e) => e.topic), ['/containers/create', '/containers/update', '/containers/delete']);
  });

  test('concurrent creates of one id: exactly one wins, the others are told it exists', async () => {
    await same('race', async (sock) => {
      const md = metadata('race-c');
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => outcome(unary(sock, C('Create'), { container: container('same', { image: `i${i}` }) }, md))));
      assert.equal(results.filter((r) => r === 'ok').length, 1, `${sock}: ${results}`);
      const lost = results.filter((r) => r !== 'ok');
      assert.deepEqual(new Set(lost), new Set(['6 container "same": already exists']));
      const list = (await unary(sock, C('List'), {}, md)).containers;
      // the create made its namespace exist, as containerd does
      assert.ok((await ctr(sock, 'namespaces', 'ls', '-q')).stdout.split('\n').includes('race-c'), sock);
      await unary(sock, C('Delete'), { id: 'same' }, md);
      assert.equal((await ctr(sock, 'namespaces', 'rm', 'race-c')).code, 0, sock);
      return [lost.length, list.length];
    });
  });
});
