import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, type BerthError } from '@berth/errdefs';
import { openStore } from '@berth/store';
import { Leases } from './local.js';

test('leases: create, list with filters, resources, delete, per namespace', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-leases-'));
  const db = await openStore(dir);
  const l = new Leases(db, () => ({ seconds: 1, nanos: 0 }));
  try {
    await l.create('a', 'l1', { 'containerd.io/gc.expire': '2030-01-01T00:00:00Z' });
    await l.create('a', 'l2', { team: 'x' });
    await l.create('b', 'l1', {});
    await assert.rejects(l.create('a', 'l1', {}), (e: BerthError) => e.code === Code.AlreadyExists && e.message === 'lease "l1": already exists');
    assert.equal((await l.create('a', '312560212-_PXr', {})).id, '312560212-_PXr'); // ctr's random ids
    assert.match((await l.create('a', '', {})).id, /^\d+-[A-Za-z0-9_-]+$/);
    await l.delete('a', '312560212-_PXr');
    assert.deepEqual((await l.list('a', ['id~=^l'])).map((x) => x.id), ['l1', 'l2']);
    assert.deepEqual((await l.list('a', ['labels.team==x'])).map((x) => x.id), ['l2']);
    assert.deepEqual((await l.list('a', ['id==l1'])).map((x) => x.id), ['l1']);
    const dg = 'sha256:' + 'a'.repeat(64);
    await l.addResource('a', 'l1', { id: dg, type: 'content' });
    await l.addResource('a', 'l1', { id: 'snap-1', type: 'snapshots/overlayfs' });
    await assert.rejects(l.addResource('a', 'l1', { id: 'x', type: 'content' }), (e: BerthError) => e.code === Code.InvalidArgument && /invalid content resource id x/.test(e.message));
    await assert.rejects(l.addResource('a', 'l1', { id: 'x', type: 'snapshots' }), (e: BerthError) => e.code === Code.InvalidArgument);
    await assert.rejects(l.addResource('a', 'l1', { id: 'x', type: 'images' }), (e: BerthError) => e.code === Code.Unimplemented);
    await assert.rejects(l.addResource('a', 'nope', { id: dg, type: 'content' }), (e: BerthError) => e.code === Code.NotFound && e.message === 'lease "nope": not found');
    assert.equal((await l.resources('a', 'l1')).length, 2);
    await l.deleteResource('a', 'l1', { id: dg, type: 'content' });
    assert.deepEqual(await l.resources('a', 'l1'), [{ id: 'snap-1', type: 'snapshots/overlayfs' }]);
    await l.delete('a', 'l1');
    await assert.rejects(l.delete('a', 'l1'), (e: BerthError) => e.code === Code.NotFound);
    assert.deepEqual((await l.list('b', [])).map((x) => x.id), ['l1']);
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('leases: concurrent creates of one id have one winner; ids are not key prefixes; a re-created lease starts empty; a namespace purge', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-leases-'));
  const db = await openStore(dir);
  const l = new Leases(db, () => ({ seconds: 1, nanos: 0 }));
  try {
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => l.create('a', 'same', {})));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as BerthError).code, Code.AlreadyExists);
    const dg = 'sha256:' + 'b'.repeat(64);
    await l.create('a', 'x', {});
    await l.create('a', 'x/y', {});
    await l.addResource('a', 'x/y', { id: dg, type: 'content' });
    await l.addResource('a', 'x/y', { id: 'ref/with/slashes', type: 'ingests' });
    assert.deepEqual(await l.resources('a', 'x'), []);
    await l.delete('a', 'x');
    assert.equal((await l.resources('a', 'x/y')).length, 2);
    await l.delete('a', 'x/y');
    await l.create('a', 'x/y', {});
    assert.deepEqual(await l.resources('a', 'x/y'), []);
    // a resource added while the lease is deleted either lands before (and goes with it) or fails
    await l.create('a', 'racing', {});
    const [, add] = await Promise.allSettled([l.delete('a', 'racing'), l.addResource('a', 'racing', { id: dg, type: 'content' })]);
    assert.equal(add.status, 'rejected');
    await l.create('a', 'racing', {});
    assert.deepEqual(await l.resources('a', 'racing'), []);
    await l.purge('a');
    assert.deepEqual(await l.list('a', []), []);
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
