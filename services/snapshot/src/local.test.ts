// The snapshotters without NATS: records, kinds, errors in containerd's words, events, real
// overlay and bind mounts (this runs as root), usage, a 128-layer chain, and crash leftovers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventRecorder } from '@berth/bus';
import { Code, type BerthError } from '@berth/errdefs';
import { openStore, type Store } from '@berth/store';
import { Native, Overlay, type Driver } from './drivers.js';
import { Snapshotter } from './local.js';
import { mountAll, unmountAll, withTempMount } from './mount.js';
import { Snapshotters } from './snapshots.js';

const code = (c: number, re?: RegExp) => (e: BerthError) => {
  assert.equal(e.code, c, e.message);
  if (re) assert.match(e.message, re);
  return true;
};
const ctx = { namespace: 'default' };

async function setup(make: (root: string) => Driver) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-snap-'));
  const db = await openStore(join(dir, 'meta'));
  const rec = eventRecorder();
  let t = 0;
  const sn = await new Snapshotter(make(join(dir, 'data')), db, rec, () => ({ seconds: 1_700_000_000 + ++t, nanos: 123_456_789 })).open();
  return { dir, db, sn, events: rec.events };
}

describe('overlayfs snapshotter', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  before(async () => (s = await setup((r) => new Overlay(r))));
  after(async () => {
    await s.db.close();
    rmSync(s.dir, { recursive: true, force: true });
  });

  test('prepare, commit, view and their mounts as containerd makes them', async () => {
    const { sn } = s;
    const up = (id: string) => join(sn.driver.dir, id, 'fs');
    const m1 = await sn.prepare(ctx, 'a1', '', { x: '1' });
    assert.deepEqual(m1, [{ type: 'bind', source: up('1'), options: ['rw', 'rbind'] }]);
    writeFileSync(join(up('1'), 'one'), 'layer one');
    await sn.commit(ctx, 'c1', 'a1', { y: '2' });
    const m2 = await sn.prepare(ctx, 'a2', 'c1');
    const index = existsSync('/sys/module/overlay/parameters/index') ? ['index=off'] : [];
    assert.deepEqual(m2, [{ type: 'overlay', source: 'overlay', options: [...index, `workdir=${join(sn.driver.dir, '2', 'work')}`, `upperdir=${up('2')}`, `lowerdir=${up('1')}`] }]);
    // a view of one layer is a read-only bind of it; of a chain, an overlay with lowerdirs only
    assert.deepEqual(await sn.view(ctx, 'v1', 'c1'), [{ type: 'bind', source: up('1'), options: ['ro', 'rbind'] }]);
    assert.deepEqual(await sn.view(ctx, 'v0', ''), [{ type: 'bind', source: up('4'), options: ['ro', 'rbind'] }]);
    assert.deepEqual(await sn.mounts(ctx, 'a2'), m2);
    await withTempMount(m2, async (root) => {
      assert.equal(readFileSync(join(root, 'one'), 'utf8'), 'layer one');
      writeFileSync(join(root, 'two'), 'layer two');
    });
    assert.equal(readFileSync(join(up('2'), 'two'), 'utf8'), 'layer two');
    await sn.commit(ctx, 'c2', 'a2');
    const m3 = await sn.view(ctx, 'v2', 'c2');
    assert.deepEqual(m3, [{ type: 'overlay', source: 'overlay', options: [...index, `lowerdir=${up('2')}:${up('1')}`] }]);
    await withTempMount(m3, async (root) => assert.deepEqual(readdirSync(root).sort(), ['one', 'two']));

    const info = await sn.stat(ctx, 'c1');
    assert.deepEqual({ ...info, created_at: null, updated_at: null }, { name: 'c1', parent: '', kind: 'COMMITTED', labels: { y: '2' }, created_at: null, updated_at: null });
    assert.equal(info.created_at.nanos, 123_456_789);
    assert.equal((await sn.stat(ctx, 'c2')).parent, 'c1');
    assert.equal((await sn.stat(ctx, 'v2')).kind, 'VIEW');
    assert.deepEqual(s.events.map(([ns, t, e]) => [ns, t, e]), [
      ['default', '/snapshot/prepare', { key: 'a1', parent: '' }],
      ['default', '/snapshot/commit', { key: 'a1', name: 'c1' }],
      ['default', '/snapshot/prepare', { key: 'a2', parent: 'c1' }],
      ['default', '/snapshot/commit', { key: 'a2', name: 'c2' }],
    ]);
  });

  test("errors in containerd's words", async () => {
    const { sn } = s;
    await assert.rejects(sn.prepare(ctx, 'c1', ''), code(Code.AlreadyExists, /^snapshot "c1": already exists$/));
    await assert.rejects(sn.prepare(ctx, 'x', 'nope'), code(Code.NotFound, /^parent snapshot nope does not exist: not found$/));
    await assert.rejects(sn.prepare(ctx, 'x', 'v1'), code(Code.InvalidArgument, /^failed to create snapshot: parent "default\/\d+\/v1" is not committed snapshot: invalid argument$/));
    await assert.rejects(sn.remove(ctx, 'c1'), code(Code.FailedPrecondition, /^cannot remove snapshot with child: failed precondition$/));
    await assert.rejects(sn.commit(ctx, 'c9', 'v1'), code(Code.FailedPrecondition, /^failed to commit snapshot: snapshot "default\/\d+\/v1" is not active: failed precondition$/));
    await assert.rejects(sn.commit(ctx, 'c9', 'c1'), code(Code.FailedPrecondition, /is not active/));
    await assert.rejects(sn.commit(ctx, 'c1', 'v1'), code(Code.AlreadyExists, /^snapshot "c1": already exists$/));
    await assert.rejects(sn.commit(ctx, 'c9', 'nope'), code(Code.NotFound, /^snapshot nope does not exist: not found$/));
    await assert.rejects(sn.mounts(ctx, 'c1'), code(Code.FailedPrecondition, /^failed to get active mount: requested snapshot default\/\d+\/c1 not active or view: failed precondition$/));
    await assert.rejects(sn.stat(ctx, 'nope'), code(Code.NotFound, /^snapshot nope does not exist: not found$/));
    await assert.rejects(sn.stat({ namespace: 'other' }, 'c1'), code(Code.NotFound));
    await assert.rejects(sn.stat({}, 'c1'), code(Code.FailedPrecondition, /namespace is required/));
    await assert.rejects(sn.prepare(ctx, 'big', '', { k: 'v'.repeat(5000) }), code(Code.InvalidArgument, /^info.Labels: label key and value greater than maximum size \(4096 bytes\), key: k: invalid argument$/));
    await assert.rejects(sn.update(ctx, { name: 'c1', labels: {} }, ['parent']), code(Code.InvalidArgument, /^cannot update "parent" field on snapshot "c1": invalid argument$/));
    await assert.rejects(sn.update(ctx, { name: '' }, []), code(Code.InvalidArgument, /^invalid argument$/));
    await assert.rejects(sn.prepare(ctx, 'r', '', { 'containerd.io/snapshot.ref': 'c1' }), code(Code.AlreadyExists, /^target snapshot "c1": already exists$/));
    const all = new Snapshotters([sn]);
    assert.throws(() => all.get('foo'), code(Code.InvalidArgument, /^snapshotter not loaded: foo: invalid argument$/));
    assert.throws(() => all.get(''), code(Code.InvalidArgument, /^snapshotter argument missing: invalid argument$/));
    assert.deepEqual(await all.kinds('default'), ['snapshots on "overlayfs" snapshotter']);
    assert.deepEqual(await all.kinds('other'), []);
  });

  test('update by field path, list with filters, usage', async () => {
    const { sn } = s;
    const before = await sn.stat(ctx, 'c1');
    const u = await sn.update(ctx, { name: 'c1', labels: { a: 'b', y: '' } }, ['labels.a', 'labels.y']);
    assert.deepEqual(u.labels, { a: 'b' });
    assert.ok(u.updated_at.seconds > before.updated_at.seconds);
    assert.deepEqual(u.created_at, before.created_at);
    assert.deepEqual((await sn.update(ctx, { name: 'c1', labels: { z: '1' } }, [])).labels, { z: '1' });
    const names = async (f: string[]) => (await sn.list(ctx, f)).map((i) => i.name);
    assert.deepEqual(await names([]), ['c1', 'c2', 'v0', 'v1', 'v2']);
    assert.deepEqual(await names(['kind==view']), ['v0', 'v1', 'v2']);
    assert.deepEqual(await names(['parent==c1']), ['c2', 'v1']);
    assert.deepEqual(await names(['labels.z==1', 'name==v2']), ['c1', 'v2']);
    assert.deepEqual(await names(['name~=^c']), ['c1', 'c2']);
    // an active snapshot is measured now, a committed one was at commit, a view has none
    await sn.prepare(ctx, 'u', 'c2');
    const upper = (await sn.mounts(ctx, 'u'))[0]!.options.find((o) => o.startsWith('upperdir='))!.slice('upperdir='.length);
    writeFileSync(join(upper, 'f'), Buffer.alloc(10_000, 1));
    linkSync(join(upper, 'f'), join(upper, 'g'));
    mkdirSync(join(upper, 'd'));
    const st = statSync(join(upper, 'f'));
    const du = await sn.usage(ctx, 'u');
    assert.equal(du.inodes, 3); // fs, f (twice linked, counted once), d
    assert.equal(du.size, statSync(upper).blocks * 512 + st.blocks * 512 + statSync(join(upper, 'd')).blocks * 512);
    await sn.commit(ctx, 'uc', 'u');
    writeFileSync(join(upper, 'after'), 'not counted');
    assert.deepEqual(await sn.usage(ctx, 'uc'), du);
    assert.deepEqual(await sn.usage(ctx, 'v1'), { size: 0, inodes: 0 });
  });

  test("a new upper belongs to the owner of its parent's root (a userns-remapped image), ours otherwise", async () => {
    const { sn } = s;
    const upper = async (key: string) => statSync(join((await sn.mounts(ctx, key))[0]!.options.find((o) => o.startsWith('upperdir='))!.slice('upperdir='.length)));
    await sn.prepare(ctx, 'own-base', '');
    const base = (await sn.mounts(ctx, 'own-base'))[0]!.source; // a bind of its upper
    await sn.commit(ctx, 'own-c', 'own-base');
    await sn.prepare(ctx, 'own-a', 'own-c');
    assert.deepEqual([(await upper('own-a')).uid, (await upper('own-a')).gid], [process.getuid!(), process.getgid!()]);
    chownSync(base, 100000, 100000);
    await sn.prepare(ctx, 'own-b', 'own-c');
    assert.deepEqual([(await upper('own-b')).uid, (await upper('own-b')).gid], [100000, 100000]);
    for (const k of ['own-b', 'own-a', 'own-c']) await sn.remove(ctx, k);
    await sn.removed();
  });

  test('remove: record and directory go, leaves first', async () => {
    const { sn } = s;
    const before = readdirSync(sn.driver.dir).length;
    await sn.remove(ctx, 'v2');
    await sn.remove(ctx, 'uc');
    // out of the way at the answer (renamed), deleted after it
    assert.equal(readdirSync(sn.driver.dir).filter((n) => !n.startsWith('rm-')).length, before - 2);
    await sn.removed();
    assert.equal(readdirSync(sn.driver.dir).length, before - 2);
    await assert.rejects(sn.remove(ctx, 'v2'), code(Code.NotFound, /^snapshot v2 does not exist: not found$/));
    assert.deepEqual(s.events.at(-1), ['default', '/snapshot/remove', { key: 'uc' }]);
    await sn.remove(ctx, 'c2');
  });

  test('a 128-layer chain mounts through the helper and every layer reads back', async () => {
    const { sn } = s;
    let parent = '';
    for (let i = 0; i < 128; i++) {
      const m = await sn.prepare(ctx, `deep-a${i}`, parent);
      await withTempMount(m, async (root) => writeFileSync(join(root, `layer-${i}`), `content ${i}`));
      await sn.commit(ctx, `deep-${i}`, `deep-a${i}`);
      parent = `deep-${i}`;
    }
    const m = await sn.view(ctx, 'deep-view', parent);
    const lower = m[0]!.options.find((o) => o.startsWith('lowerdir='))!;
    assert.equal(lower.split(':').length, 128);
    assert.ok(lower.length > 4096, `lowerdir is ${lower.length} bytes: not past a page`);
    await withTempMount(m, async (root) => {
      for (let i = 0; i < 128; i++) assert.equal(readFileSync(join(root, `layer-${i}`), 'utf8'), `content ${i}`);
    });
    // an active one on top, writable
    const a = await sn.prepare(ctx, 'deep-top', parent);
    const target = mkdtempSync(join(tmpdir(), 'berth-deep-'));
    mountAll(a, target);
    try {
      writeFileSync(join(target, 'top'), 'top');
      assert.equal(readFileSync(join(target, 'layer-0'), 'utf8'), 'content 0');
    } finally {
      await unmountAll(target);
      rmSync(target, { recursive: true });
    }
  });

  test('prepareOnPending: a snapshot on an active one that is then committed as the named parent', async () => {
    const { sn } = s;
    const pctx = { namespace: 'pending' };
    const up = (m: { options: string[] }[]) => m[0]!.options.find((o) => o.startsWith('upperdir='))?.slice(9) ?? (m[0] as unknown as { source: string }).source;
    const m0 = await sn.prepare(pctx, 'k0', '');
    const m1 = await sn.prepareOnPending(pctx, 'k1', 'p0', 'k0');
    const m2 = await sn.prepareOnPending(pctx, 'k2', 'p1', 'k1');
    assert.equal((await sn.stat(pctx, 'k1')).parent, 'p0');
    assert.equal((await sn.stat(pctx, 'k2')).parent, 'p1');
    // stacked on the active snapshots' directories, which their commits keep
    assert.ok(m2[0]!.options.includes(`lowerdir=${up(m1)}:${up(m0)}`));
    await assert.rejects(sn.prepareOnPending(pctx, 'k3', 'p9', 'nope'), code(Code.NotFound));
    await sn.commit(pctx, 'p0', 'k0');
    await sn.commit(pctx, 'p1', 'k1');
    await sn.commit(pctx, 'p2', 'k2');
    assert.deepEqual((await sn.list(pctx)).map((i) => [i.name, i.parent, i.kind]), [['p0', '', 'COMMITTED'], ['p1', 'p0', 'COMMITTED'], ['p2', 'p1', 'COMMITTED']]);
    assert.deepEqual(await sn.view(pctx, 'v', 'p2'), [{ type: 'overlay', source: 'overlay', options: [...(existsSync('/sys/module/overlay/parameters/index') ? ['index=off'] : []), `lowerdir=${up(m2)}:${up(m1)}:${up(m0)}`] }]);
    // committed parent: an ordinary prepare; a committed "pending" one is refused
    assert.equal((await sn.prepareOnPending(pctx, 'k4', 'p2', 'k2')).length, 1);
    await sn.commit(pctx, 'p4', 'k4');
    await assert.rejects(sn.prepareOnPending(pctx, 'k5', 'p5', 'p4'), code(Code.FailedPrecondition));
    await assert.rejects(sn.remove(pctx, 'p0'), code(Code.FailedPrecondition, /child/));
  });
});

describe('native snapshotter', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  before(async () => (s = await setup((r) => new Native(r))));
  after(async () => {
    await s.db.close();
    rmSync(s.dir, { recursive: true, force: true });
  });

  test('copies the parent, bind-mounts as containerd does', async () => {
    const { sn } = s;
    const d = (id: string) => join(sn.driver.dir, id);
    assert.deepEqual(await sn.prepare(ctx, 'n1', ''), [{ type: 'bind', source: d('1'), options: ['rbind', 'rw'] }]);
    writeFileSync(join(d('1'), 'f'), 'one');
    await sn.commit(ctx, 'nc1', 'n1');
    assert.deepEqual(await sn.prepare(ctx, 'n2', 'nc1'), [{ type: 'bind', source: d('2'), options: ['rbind', 'rw'] }]);
    assert.equal(readFileSync(join(d('2'), 'f'), 'utf8'), 'one');
    assert.deepEqual(await sn.view(ctx, 'nv', 'nc1'), [{ type: 'bind', source: d('1'), options: ['rbind', 'ro'] }]);
    assert.equal(existsSync(d('3')), false); // a view of a parent has no directory of its own
    await withTempMount(await sn.mounts(ctx, 'nv'), async (root) => {
      assert.equal(readFileSync(join(root, 'f'), 'utf8'), 'one');
      assert.throws(() => writeFileSync(join(root, 'g'), 'x'), /EROFS/);
    });
    await assert.rejects(sn.mounts(ctx, 'nc1'), code(Code.FailedPrecondition, /^failed to get snapshot mount: requested snapshot/));
    await sn.remove(ctx, 'nv');
    await sn.remove(ctx, 'n2');
    assert.equal(existsSync(d('2')), false);
    assert.equal((await sn.usage(ctx, 'nc1')).inodes, 2);
  });
});

test('ids: concurrent Prepares take distinct ones; a snapshotter opened again on the same store never hands out one used before', async () => {
  const s1 = await setup((r) => new Overlay(r));
  try {
    await Promise.all(Array.from({ length: 40 }, (_, i) => s1.sn.prepare(ctx, `k${i}`, '')));
    const dir = s1.sn.driver.dir;
    const first = readdirSync(dir).map(Number);
    assert.equal(new Set(first).size, 40);
    // the same store and folder, as after a restart (the first one's unused block is skipped)
    const again = await new Snapshotter(new Overlay(join(s1.dir, 'data')), s1.db, eventRecorder(), () => ({ seconds: 1, nanos: 0 })).open();
    await again.prepare(ctx, 'after', '');
    const added = readdirSync(dir).map(Number).filter((n) => !first.includes(n));
    assert.equal(added.length, 1);
    assert.ok(added[0]! > Math.max(...first), `${added[0]} after ${Math.max(...first)}`);
  } finally {
    await s1.db.close();
    rmSync(s1.dir, { recursive: true, force: true });
  }
});

describe('crash leftovers', () => {
  const dist = fileURLToPath(new URL('.', import.meta.url));

  // A child process runs one call with a fault point armed; it dies by SIGKILL right there.
  function crash(dir: string, fault: string, body: string): void {
    const faults = join(dir, 'faults');
    writeFileSync(faults, fault);
    const script = `
      import { openStore } from '@berth/store';
      import { eventRecorder } from '@berth/bus';
      import { Snapshotter } from '${dist}local.js';
      import { Overlay } from '${dist}drivers.js';
      import { mkdirSync } from 'node:fs';
      const db = await openStore(${JSON.stringify(join(dir, 'meta'))});
      // no open(): its start-up cleanup would hide what the crash before this one left
      const sn = new Snapshotter(new Overlay(${JSON.stringify(join(dir, 'data'))}), db, eventRecorder(), () => ({ seconds: 1, nanos: 0 }));
      mkdirSync(sn.driver.dir, { recursive: true });
      const ctx = { namespace: 'default' };
      ${body}
      console.log('survived');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dist, env: { ...process.env, BERTH_FAULTS_FILE: faults }, encoding: 'utf8' });
    assert.equal(r.signal, 'SIGKILL', `expected to die at ${fault}: ${r.stdout} ${r.stderr}`);
  }

  async function reopen(dir: string, startUp = false): Promise<{ db: Store; sn: Snapshotter; removed: string[] }> {
    const db = await openStore(join(dir, 'meta'));
    const sn = new Snapshotter(new Overlay(join(dir, 'data')), db, eventRecorder(), () => ({ seconds: 2, nanos: 0 }));
    const before = readdirSync(sn.driver.dir);
    const removed = startUp ? (await sn.open(), before.filter((n) => !readdirSync(sn.driver.dir).includes(n))) : await sn.cleanup();
    return { db, sn, removed };
  }

  test('kill -9 during Prepare (made, placed) and Commit: Cleanup removes what no record holds; later calls work', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-crash-'));
    try {
      crash(dir, 'none', `await sn.prepare(ctx, 'base', ''); await sn.commit(ctx, 'c', 'base'); process.kill(process.pid, 'SIGKILL');`);
      crash(dir, 'snapshot-prepare-made', `await sn.prepare(ctx, 'p1', 'c');`);
      crash(dir, 'snapshot-prepare-placed', `await sn.prepare(ctx, 'p2', 'c');`);
      crash(dir, 'snapshot-commit-measured', `await sn.prepare(ctx, 'p3', 'c'); await sn.commit(ctx, 'c3', 'p3');`);
      const data = join(dir, 'data', 'snapshots');
      // each process took ids from a block of its own, so they rise across the crashes: base's,
      // p1's (made, not placed), p2's (placed, no record), p3's (recorded)
      const names = readdirSync(data);
      const made = names.filter((n) => n.startsWith('new-'));
      const placed = names.filter((n) => !n.startsWith('new-')).sort((a, b) => Number(a) - Number(b));
      assert.equal(made.length, 1, names.join(' '));
      assert.equal(placed.length, 3, names.join(' '));
      const [baseId, p2Id, p3Id] = placed as [string, string, string];
      assert.ok(Number(baseId) < Number(made[0]!.slice(4)) && Number(made[0]!.slice(4)) < Number(p2Id), 'never an id used before');
      const { db, sn, removed } = await reopen(dir);
      try {
        assert.deepEqual(removed.sort(), [p2Id, made[0]!].sort());
        assert.deepEqual(readdirSync(data).sort(), [baseId, p3Id].sort());
        // every record's directory is there, and the crashed keys are free again
        assert.deepEqual((await sn.list(ctx)).map((i) => `${i.name}:${i.kind}`), ['c:COMMITTED', 'p3:ACTIVE']);
        await sn.prepare(ctx, 'p1', 'c');
        await sn.prepare(ctx, 'p2', 'c');
        await sn.commit(ctx, 'c3', 'p3');
        await sn.remove(ctx, 'c3');
        await withTempMount(await sn.mounts(ctx, 'p2'), async () => undefined);
        assert.deepEqual(await sn.cleanup(), []);
      } finally {
        await db.close();
      }
      // and a crash between a removal's record and its directory: the next start removes it
      crash(dir, 'snapshot-remove-recorded', `await sn.remove(ctx, 'p2');`);
      const again = await reopen(dir, true);
      try {
        assert.equal(again.removed.length, 1);
        await assert.rejects(again.sn.stat(ctx, 'p2'), code(Code.NotFound));
      } finally {
        await again.db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
