import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, type BerthError } from '@berth/errdefs';
import { openStore } from '@berth/store';
import { Namespaces } from './local.js';
import { NamespaceStore } from './store.js';

async function fixture(usage: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-ns-'));
  const db = await openStore(dir);
  const events: [string, string, Record<string, unknown>][] = [];
  const inUse = { kinds: usage };
  const ns = new Namespaces(new NamespaceStore(db), async () => inUse.kinds, (n, topic, e) => void events.push([n, topic, e]));
  return { ns, events, inUse, done: async () => { await db.close(); rmSync(dir, { recursive: true, force: true }); } };
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
