// Garbage collection through the real stack and the real ctr: what `ctr images rm --sync` leaves
// is what the reference containerd leaves; leases hold content until they go (`ctr leases rm
// --sync` returns after the collection); an expired lease goes at the next timed collection;
// gc.root keeps things; writes racing collections lose nothing; a service that is down makes
// a collection skip, not delete. Each collection's figures come on berth.gc.<node>.collected.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { contentSet, ctr, natsWith, run, shared, sleep, startReference, startStack, until, type Reference, type Run, type Stack } from './harness.js';
import { metadata, unary, writeBlob, type GrpcError } from './grpc.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const img = (name: string) => `${registry}/library/${name}:latest`;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const collect = (sock: string) => unary(sock, '/berth.gc.v1.GC/Collect', {});
const L = (m: string) => `/containerd.services.leases.v1.Leases/${m}`;

/** snapshots ls as a set: key, parent, kind. */
const snapshotSet = (r: Run) =>
  r.stdout
    .split('\n')
    .slice(1)
    .filter(Boolean)
    .map((l) => l.trim().split(/\s+/).join(' '))
    .sort();

describe('garbage collection', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  let registryUp = false;
  const dir = mkdtempSync('/tmp/berth-gc-it-');
  const ns = `gc-${process.pid}`;
  const collected: Record<string, unknown>[] = [];
  let stopWatch = () => undefined as unknown;

  before(async () => {
    // a short timer, so the expired-lease test does not wait a minute
    const config = join(dir, 'config.toml');
    writeFileSync(config, '[gc]\ninterval = "2s"\n');
    const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
    [stack, ref] = await Promise.all([startStack({ config }), startReference()]);
    registryUp = (await reg).code === 0;
    const nc = await natsWith(stack.natsUrl, stack.credentials('subscriber'));
    const sub = nc.subscribe('berth.gc.it-node.collected', { callback: (_e, m) => void collected.push(m.json()) });
    stopWatch = () => (sub.unsubscribe(), nc.close());
  });
  after(async () => {
    stopWatch();
    await ref?.stop();
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('after ctr images rm --sync, content and snapshots are what the reference containerd keeps', async (t) => {
    if (!registryUp || !ref) return t.skip('no local registry or reference containerd');
    const n = `${ns}-images`;
    const on = (sock: string, ...args: string[]) => ctr(sock, '-n', n, ...args);
    const same = async (what: string) => {
      const [bc, rc, bs, rs] = await Promise.all([on(stack.sock, 'content', 'ls'), on(ref!.sock, 'content', 'ls'), on(stack.sock, 'snapshots', 'ls'), on(ref!.sock, 'snapshots', 'ls')]);
      assert.deepEqual(contentSet(bc), contentSet(rc), `content after ${what}`);
      assert.deepEqual(snapshotSet(bs), snapshotSet(rs), `snapshots after ${what}`);
      return [contentSet(bc).length, snapshotSet(bs).length];
    };
    for (const sock of [stack.sock, ref.sock]) {
      for (const i of ['busybox', 'layered']) {
        const r = await on(sock, 'images', 'pull', '--plain-http', img(i));
        assert.equal(r.code, 0, r.stderr);
      }
    }
    const [c0, s0] = await same('pull');
    assert.ok(c0 > 0 && s0 > 0);
    for (const sock of [stack.sock, ref.sock]) assert.equal((await on(sock, 'images', 'rm', '--sync', img('layered'))).code, 0);
    const [c1, s1] = await same('images rm layered');
    assert.ok(c1 < c0 && c1 > 0, `layered's own content went, busybox's stayed (${c0} -> ${c1})`);
    assert.ok(s1 < s0 && s1 > 0);
    // a container keeps its snapshot (and its parents) once the image is gone
    for (const sock of [stack.sock, ref.sock]) assert.equal((await on(sock, 'containers', 'create', img('busybox'), 'c1')).code, 0);
    for (const sock of [stack.sock, ref.sock]) assert.equal((await on(sock, 'images', 'rm', '--sync', img('busybox'))).code, 0);
    const [c2, s2] = await same('images rm busybox with a container');
    assert.equal(c2, 0);
    assert.ok(s2 > 0, 'the container holds its snapshots');
    for (const sock of [stack.sock, ref.sock]) assert.equal((await on(sock, 'containers', 'rm', 'c1')).code, 0);
    // containers rm is a deletion: both collect on their own
    await until(async () => snapshotSet(await on(stack.sock, 'snapshots', 'ls')).length === 0, 10_000, 'snapshots collected after containers rm');
    await until(async () => snapshotSet(await on(ref!.sock, 'snapshots', 'ls')).length === 0, 10_000, 'the reference collected its snapshots');
    await same('containers rm');
  });

  test('a lease keeps its content until ctr leases rm --sync, which returns after the collection', async () => {
    const n = `${ns}-lease`;
    const lease = 'hold';
    assert.equal((await ctr(stack.sock, '-n', n, 'leases', 'create', '--id', lease)).code, 0);
    const blob = randomBytes(4096);
    assert.equal(await writeBlob(stack.sock, metadata(n, lease), 'r1', blob, sha(blob)), 'ok');
    const stats = await collect(stack.sock);
    assert.ok(Number(stats.marked) > 0);
    assert.match((await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout, new RegExp(sha(blob).slice(7)));
    const rm = await ctr(stack.sock, '-n', n, 'leases', 'rm', '--sync', lease);
    assert.equal(rm.code, 0, rm.stderr);
    // no waiting: the delete returned after the collection
    assert.equal((await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.trim(), '');
  });

  test('a blob file whose last record is deleted goes at the next collection; collections with no content write since leave the files unlisted', async () => {
    const n = `${ns}-files`;
    assert.equal((await ctr(stack.sock, '-n', n, 'leases', 'create', '--id', 'keep')).code, 0);
    const blob = randomBytes(2048);
    const digest = sha(blob);
    const file = join(stack.root, 'content', 'blobs', 'sha256', digest.slice(7));
    assert.equal(await writeBlob(stack.sock, metadata(n, 'keep'), 'f1', blob, digest), 'ok');
    const swept = async () => {
      const seen = collected.length;
      const stats = await collect(stack.sock);
      await until(async () => collected.slice(seen).some((c) => c.epoch === stats.epoch), 5000, 'the figures of that collection');
      return collected.find((c) => c.epoch === stats.epoch)!.swept as string[];
    };
    await swept(); // whatever earlier tests left
    assert.deepEqual(await swept(), [], 'nothing unreferenced, no content write since the last sweep: no sweep asked');
    assert.ok(existsSync(file));
    // the lease still names the digest, but no record does: the file has no name left
    const seen = collected.length;
    const rm = await ctr(stack.sock, '-n', n, 'content', 'rm', digest);
    assert.equal(rm.code, 0, rm.stderr);
    // the delete schedules a collection itself (as containerd's does), which asks content to look
    await collect(stack.sock);
    await until(async () => collected.slice(seen).some((c) => (c.swept as string[]).includes('content')), 10_000, 'a collection that has content look at its files');
    assert.equal(existsSync(file), false, 'the file is gone');
    assert.deepEqual(await swept(), [], 'and once looked at, not again');
    assert.equal((await ctr(stack.sock, '-n', n, 'leases', 'rm', 'keep')).code, 0);
  });

  test('an expired lease is released at the next timed collection, without any deletion', async () => {
    const n = `${ns}-expire`;
    const exp = new Date(Date.now() + 1500).toISOString().replace(/\.\d+Z$/, 'Z');
    await unary(stack.sock, L('Create'), { id: 'short', labels: { 'containerd.io/gc.expire': exp } }, metadata(n));
    const blob = randomBytes(1000);
    assert.equal(await writeBlob(stack.sock, metadata(n, 'short'), 'r1', blob, sha(blob)), 'ok');
    assert.equal((await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.trim(), sha(blob));
    const ms = await until(async () => (await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.trim() === '', 15_000, 'expired lease content collected');
    assert.equal((await ctr(stack.sock, '-n', n, 'leases', 'ls', '-q')).stdout.trim(), '', 'the expired lease itself is gone');
    console.log(`# expired lease released ${ms} ms after its content was written`);
  });

  test('containerd.io/gc.root keeps content and snapshots that nothing else holds', async () => {
    const n = `${ns}-root`;
    assert.equal((await ctr(stack.sock, '-n', n, 'leases', 'create', '--id', 'l')).code, 0);
    const [a, b] = [randomBytes(100), randomBytes(100)];
    for (const [i, x] of [a, b].entries()) assert.equal(await writeBlob(stack.sock, metadata(n, 'l'), `r${i}`, x, sha(x)), 'ok');
    const S = (m: string) => `/containerd.services.snapshots.v1.Snapshots/${m}`;
    for (const k of ['s-root', 's-gone']) await unary(stack.sock, S('Prepare'), { snapshotter: 'overlayfs', key: k, parent: '' }, metadata(n, 'l'));
    assert.equal((await ctr(stack.sock, '-n', n, 'content', 'label', sha(a), 'containerd.io/gc.root=yes')).code, 0);
    assert.equal((await ctr(stack.sock, '-n', n, 'snapshots', 'label', 's-root', 'containerd.io/gc.root=yes')).code, 0);
    assert.equal((await ctr(stack.sock, '-n', n, 'leases', 'rm', '--sync', 'l')).code, 0);
    assert.equal((await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.trim(), sha(a));
    assert.deepEqual(snapshotSet(await ctr(stack.sock, '-n', n, 'snapshots', 'ls')).map((l) => l.split(' ')[0]), ['s-root']);
  });

  test('writes under leases racing collections in a loop lose nothing, and all complete', async () => {
    const n = `${ns}-race`;
    const S = (m: string) => `/containerd.services.snapshots.v1.Snapshots/${m}`;
    let stop = false;
    let collections = 0;
    const loop = (async () => {
      while (!stop) {
        await collect(stack.sock).then(() => collections++, () => undefined);
      }
    })();
    const writers = 8;
    const perWriter = 10;
    const held: { lease: string; digest: string; snap: string }[] = [];
    const failures: string[] = [];
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < perWriter; i++) {
          const lease = `w${w}-${i}`;
          await unary(stack.sock, L('Create'), { id: lease, labels: {} }, metadata(n));
          const blob = randomBytes(2048 + i);
          const r = await writeBlob(stack.sock, metadata(n, lease), `w${w}-${i}`, blob, sha(blob));
          if (r !== 'ok') failures.push(`write ${lease}: ${r}`);
          const snap = `snap-${w}-${i}`;
          await unary(stack.sock, S('Prepare'), { snapshotter: 'overlayfs', key: snap, parent: '' }, metadata(n, lease)).catch((e: GrpcError) => failures.push(`prepare ${snap}: ${e.details}`));
          held.push({ lease, digest: sha(blob), snap });
          // every other lease goes again: its resources are garbage for the loop to take
          if (i % 2 === 1) await unary(stack.sock, L('Delete'), { id: lease }, metadata(n));
        }
      }),
    );
    stop = true;
    await loop;
    assert.deepEqual(failures, []);
    assert.ok(collections >= 2, `collections ran during the writes (${collections})`);
    await collect(stack.sock);
    const content = new Set((await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.split('\n').filter(Boolean));
    const snaps = new Set(snapshotSet(await ctr(stack.sock, '-n', n, 'snapshots', 'ls')).map((l) => l.split(' ')[0]));
    const kept = held.filter((h) => !/-(\d*[13579])$/.test(h.lease));
    for (const h of kept) {
      assert.ok(content.has(h.digest), `${h.lease}'s blob kept`);
      assert.ok(snaps.has(h.snap), `${h.lease}'s snapshot kept`);
    }
    // and what no lease holds any more is gone
    assert.equal(content.size, kept.length);
    assert.equal(snaps.size, kept.length);
    console.log(`# ${writers * perWriter} writes and prepares under leases, ${collections} collections meanwhile`);
  });

  test('a service that does not answer makes the collection skip; nothing is deleted on partial knowledge', async () => {
    const n = `${ns}-down`;
    const pid = stack.pid('images');
    // stopped, not killed: the supervisor does not bring it back meanwhile
    process.kill(pid, 'SIGSTOP');
    let garbage: string;
    let skipped: string;
    try {
      await unary(stack.sock, L('Create'), { id: 'g', labels: {} }, metadata(n));
      const blob = randomBytes(500);
      garbage = sha(blob);
      assert.equal(await writeBlob(stack.sock, metadata(n, 'g'), 'r', blob, garbage), 'ok');
      await unary(stack.sock, L('Delete'), { id: 'g' }, metadata(n)); // garbage now
      skipped = await collect(stack.sock).then(
        () => 'ran',
        (e: GrpcError) => `${e.code} ${e.details}`,
      );
      assert.equal((await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.trim(), garbage, 'nothing deleted');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.match(skipped, /^14 gc: collection skipped, not every service answered \(images: /);
    await collect(stack.sock);
    assert.equal((await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.trim(), '', 'the next collection takes it');
  });

  test('kill -9 of a service during a collection loses nothing referenced; the next collection completes', async () => {
    const n = `${ns}-kill`;
    await unary(stack.sock, L('Create'), { id: 'keep', labels: {} }, metadata(n));
    const kept = randomBytes(700);
    assert.equal(await writeBlob(stack.sock, metadata(n, 'keep'), 'k', kept, sha(kept)), 'ok');
    for (const victim of ['content', 'snapshot', 'leases', 'images', 'containers']) {
      await unary(stack.sock, L('Create'), { id: `g-${victim}`, labels: {} }, metadata(n));
      const blob = randomBytes(300);
      assert.equal(await writeBlob(stack.sock, metadata(n, `g-${victim}`), `g-${victim}`, blob, sha(blob)), 'ok');
      await unary(stack.sock, L('Delete'), { id: `g-${victim}` }, metadata(n)).catch(() => undefined);
      const pid = stack.pid(victim);
      const running = collect(stack.sock).then(
        () => 'completed',
        (e: GrpcError) => `skipped (${e.details})`,
      );
      await sleep(3);
      process.kill(pid, 'SIGKILL');
      const how = await running;
      await until(async () => collect(stack.sock).then(() => true, () => false), 30_000, `a collection completes after ${victim} was killed`);
      const left = (await ctr(stack.sock, '-n', n, 'content', 'ls', '-q')).stdout.trim();
      assert.equal(left, sha(kept), `after kill -9 of ${victim} (${how}): the leased blob stays, the garbage goes`);
    }
  });

  test('each collection publishes its figures on berth.gc.<node>.collected', async () => {
    await collect(stack.sock);
    await until(async () => collected.length > 0, 5000, 'a figures message');
    const last = collected.at(-1)!;
    for (const k of ['epoch', 'durationMs', 'barrierMs', 'marked', 'removed', 'bytes']) assert.ok(k in last, k);
    const durations = collected.map((c) => Number(c.durationMs)).sort((a, b) => a - b);
    console.log(`# ${collected.length} collections: duration p50 ${durations[Math.floor(durations.length / 2)]} ms, max ${durations.at(-1)} ms`);
  });
});
