import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, type BerthError } from '@berth/errdefs';
import { openStore } from '@berth/store';
import { eventRecorder, NamespaceGuard } from '@berth/bus';
import { Namespaces } from './local.js';
import { NamespaceStore } from './store.js';

async function fixture(usage: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-ns-'));
  const db = await openStore(dir);
  const rec = eventRecorder();
  const inUse = { kinds: usage };
  const guard: NamespaceGuard = new NamespaceGuard({ kinds: async () => inUse.kinds, ensure: (n: string) => ns.ensure(n) });
  const ns: Namespaces = new Namespaces(new NamespaceStore(db), { seal: (n: string) => guard.seal(n), release: (n: string, d: boolean) => guard.release(n, d) }, rec);
  return { ns, events: rec.events, inUse, guard, done: async () => { await db.close(); rmSync(dir, { recursive: true, force: true }); } };
}
const code = (c: number, msg?: RegExp) => (e: BerthError) => e.code === c && (!msg || msg.test(e.message));

test('create, list, duplicate, invalid names', async () => {
  const f = await fixture();
  await f.ns.create({ name: 'k8s.io', labels: { a: 'b' } }, 'default');
  await assert.rejects(f.ns.create({ name: 'k8s.io', labels: {} }, 'default'), code(Code.AlreadyExists, /^namespace "k8s.io": already exists$/));
  await assert.rejects(f.ns.create({ name: 'bad name', labels: {} }, 'default'), code(Code.InvalidArgument, /identifier "bad name" must match/));
  await assert.rejects(f.ns.create({ name: '', labels: {} }, 'default'), code(Code.InvalidArgument, /must not be empty/));
  await assert.rejects(f.ns.create({ name: 'x'.repeat(77), labels: {} }, 'default'), code(Code.InvalidArgument, /greater than maximum length \(76/));
  await assert.rejects(f.ns.create({ name: 'big', labels: { k: 'v'.repeat(5000) } }, 'default'), code(Code.InvalidArgument, /^namespace.Labels: label key and value greater than maximum size/));
  assert.deepEqual(await f.ns.list(), [{ name: 'k8s.io', labels: { a: 'b' } }]);
  assert.deepEqual(f.events, [['default', '/namespaces/create', { name: 'k8s.io', labels: { a: 'b' } }]]);
  await f.done();
});

test('update by field path sets and removes labels; other paths are refused', async () => {
  const f = await fixture();
  await f.ns.create({ name: 'n', labels: { a: 'b', c: 'd' } }, 'default');
  await f.ns.update({ name: 'n', labels: { e: 'f', a: '' } }, ['labels.e', 'labels.a'], 'default');
  assert.deepEqual((await f.ns.get('n')).labels, { c: 'd', e: 'f' });
  await f.ns.update({ name: 'n', labels: { z: '1' } }, [], 'default');
  assert.deepEqual((await f.ns.get('n')).labels, { z: '1' });
  await assert.rejects(f.ns.update({ name: 'n', labels: {} }, ['name'], 'default'), code(Code.InvalidArgument, /^cannot update "name" field$/));
  await f.done();
});

test('delete: missing is NotFound, non-empty is FailedPrecondition naming what is left', async () => {
  const f = await fixture();
  await assert.rejects(f.ns.delete('nope'), code(Code.NotFound, /^namespace "nope": not found$/));
  await f.ns.create({ name: 'full', labels: {} }, 'default');
  f.inUse.kinds = ['images', 'blobs'];
  await assert.rejects(f.ns.delete('full'), code(Code.FailedPrecondition, /^namespace "full" must be empty, but it still has images, blobs: failed precondition$/));
  assert.equal((await f.ns.list()).length, 1);
  f.inUse.kinds = [];
  await f.ns.delete('full');
  assert.deepEqual(await f.ns.list(), []);
  assert.deepEqual(f.events.at(-1), ['full', '/namespaces/delete', { name: 'full' }]);
  await f.done();
});

test('concurrent creates of one name: exactly one wins, one event', async () => {
  const f = await fixture();
  const results = await Promise.allSettled(Array.from({ length: 8 }, () => f.ns.create({ name: 'race', labels: {} }, 'default')));
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as BerthError).code, Code.AlreadyExists);
  assert.equal(f.events.length, 1);
  await f.done();
});

test('a namespace that data was written in is listed without an explicit create, and without an event', async () => {
  const f = await fixture();
  await f.guard.write('implicit', async () => undefined);
  assert.deepEqual(await f.ns.list(), [{ name: 'implicit', labels: {} }]);
  assert.deepEqual(f.events, []);
  await f.done();
});

test('a write racing a delete either lands first (delete refused) or after (namespace exists again)', async () => {
  const f = await fixture();
  await f.ns.create({ name: 'r', labels: {} }, 'default');
  // a write in flight when the delete starts: the delete waits for it, then sees its data
  let finish!: () => void;
  let started!: () => void;
  const inFlight = new Promise<void>((r) => (started = r));
  const writing = f.guard.write('r', () => {
    started();
    return new Promise<void>((res) => (finish = res)).then(() => void (f.inUse.kinds = ['images']));
  });
  await inFlight;
  const del = f.ns.delete('r');
  await new Promise((r) => setTimeout(r, 20));
  finish();
  await writing;
  await assert.rejects(del, code(Code.FailedPrecondition, /still has images/));
  // a write that starts while the delete holds the seal lands after it, and brings the namespace back
  f.inUse.kinds = [];
  const del2 = f.ns.delete('r');
  await new Promise((r) => setImmediate(r));
  const late = f.guard.write('r', async () => 'written');
  await del2;
  assert.equal(await late, 'written');
  assert.deepEqual((await f.ns.list()).map((n) => n.name), ['r']);
  await f.done();
});

test('namespaces with a dot or a slash in labels keys and names are stored apart', async () => {
  const f = await fixture();
  await assert.rejects(f.ns.update({ name: 'a/b', labels: {} }, [], 'default'), code(Code.InvalidArgument, /must match/));
  await assert.rejects(f.ns.delete('a/b'), code(Code.NotFound, /^namespace "a\/b": not found$/));
  await f.done();
});
