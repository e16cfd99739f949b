import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, type BerthError } from '@berth/errdefs';
import { openStore, type Store } from '@berth/store';
import { eventRecorder } from '@berth/bus';
import { specToAny, type Any } from '@berth/api';
import { Containers, type Container } from './local.js';

const spec = specToAny({ ociVersion: '1.0.2-dev', process: { args: ['sh'] }, root: { path: 'rootfs' } });
const ctr = (id: string, more: Partial<Container> = {}): Container => ({
  id,
  labels: {},
  image: '',
  runtime: { name: 'io.containerd.runc.v2', options: null },
  spec,
  snapshotter: '',
  snapshot_key: '',
  created_at: null,
  updated_at: null,
  extensions: {},
  ...more,
});
const code = (c: number, re?: RegExp) => (e: BerthError) => {
  assert.equal(e.code, c, e.message);
  if (re) assert.match(e.message, re);
  return true;
};

async function withStore(fn: (db: Store) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-containers-'));
  const db = await openStore(dir);
  try {
    await fn(db);
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('containers: create keeps the spec, options and extensions byte for byte; get, delete, events', () =>
  withStore(async (db) => {
    const rec = eventRecorder();
    let t = 0;
    const cs = new Containers(db, rec, () => ({ seconds: 100, nanos: ++t }));
    // bytes that are not valid UTF-8 or JSON must come back as they were
    const odd: Any = { type_url: 'example.com/x', value: Uint8Array.from([0, 255, 128, 10]) };
    const options: Any = { type_url: 'containerd.runc.v1.Options', value: Uint8Array.from([0x0a, 0x01, 0x41]) };
    const made = await cs.create('a', ctr('one', { labels: { x: '1', gone: '' }, image: 'busybox', runtime: { name: 'io.containerd.runc.v2', options }, extensions: { odd } }));
    assert.deepEqual(made.labels, { x: '1' }, 'an empty label is not kept');
    assert.deepEqual(made.created_at, { seconds: 100, nanos: 1 });
    assert.deepEqual(made.updated_at, made.created_at);
    const got = await cs.get('a', 'one');
    assert.equal(got.spec!.type_url, spec.type_url);
    assert.deepEqual(Buffer.from(got.spec!.value), Buffer.from(spec.value));
    assert.deepEqual(Buffer.from(got.extensions.odd!.value), Buffer.from(odd.value));
    assert.deepEqual(Buffer.from(got.runtime!.options!.value), Buffer.from(options.value));
    assert.equal(got.runtime!.options!.type_url, options.type_url);
    await assert.rejects(cs.get('b', 'one'), code(Code.NotFound, /^container "one" in namespace "b": not found$/));
    await assert.rejects(cs.create('a', ctr('one')), code(Code.AlreadyExists, /^container "one": already exists$/));
    await cs.delete('a', 'one');
    await assert.rejects(cs.get('a', 'one'), code(Code.NotFound));
    assert.deepEqual(
      rec.events.map(([ns, topic, e]) => [ns, topic, e.id]),
      [
        ['a', '/containers/create', 'one'],
        ['a', '/containers/delete', 'one'],
      ],
    );
    const create = rec.events[0]![2] as { image: string; runtime: { name: string; options: Any } };
    assert.equal(create.image, 'busybox');
    assert.equal(create.runtime.name, 'io.containerd.runc.v2');
    assert.equal(create.runtime.options.type_url, options.type_url);
  }));

test('containers: validation in containerd words', () =>
  withStore(async (db) => {
    const cs = new Containers(db, eventRecorder(), () => ({ seconds: 1, nanos: 0 }));
    const v = 'create container failed validation: ';
    await assert.rejects(cs.create('a', ctr('')), code(Code.InvalidArgument, new RegExp(`^${v}container.ID: identifier must not be empty: invalid argument$`)));
    await assert.rejects(cs.create('a', ctr('a/b')), code(Code.InvalidArgument, /^create container failed validation: container.ID: identifier "a\/b" must match/));
    await assert.rejects(cs.create('a', ctr('x', { runtime: null })), code(Code.InvalidArgument, /container.Runtime.Name must be set: invalid argument$/));
    await assert.rejects(cs.create('a', ctr('x', { spec: null })), code(Code.InvalidArgument, /container.Spec must be set: invalid argument$/));
    await assert.rejects(cs.create('a', ctr('x', { snapshot_key: 'k' })), code(Code.InvalidArgument, /container.Snapshotter must be set if container.SnapshotKey is set/));
    await assert.rejects(cs.create('a', ctr('x', { extensions: { '': spec } })), code(Code.InvalidArgument, /container.Extension keys must not be zero-length/));
    await assert.rejects(cs.create('a', ctr('x', { labels: { k: 'v'.repeat(5000) } })), code(Code.InvalidArgument, /^create container failed validation: containers.Labels: label key and value greater/));
    // an empty spec is still a spec
    await cs.create('a', ctr('x', { spec: { type_url: '', value: new Uint8Array() } }));
    assert.deepEqual(await cs.list('a', []).then((l) => l.map((c) => c.id)), ['x']);
  }));

test('containers: list with containerd filters, in id order', () =>
  withStore(async (db) => {
    const cs = new Containers(db, eventRecorder(), () => ({ seconds: 1, nanos: 0 }));
    await cs.create('a', ctr('c3', { image: 'docker.io/library/busybox:latest', labels: { 'com.example.tier': 'web' } }));
    await cs.create('a', ctr('c1', { image: 'example.com/app:1', runtime: { name: 'io.containerd.runsc.v1', options: null } }));
    await cs.create('a', ctr('c2', { labels: { a: 'b' } }));
    await cs.create('b', ctr('c0'));
    const ids = async (...f: string[]) => (await cs.list('a', f)).map((c) => c.id);
    assert.deepEqual(await ids(), ['c1', 'c2', 'c3']);
    assert.deepEqual(await ids('labels."com.example.tier"==web'), ['c3']);
    assert.deepEqual(await ids('labels.com.example.tier==web'), ['c3']);
    assert.deepEqual(await ids('image~=busybox'), ['c3']);
    assert.deepEqual(await ids('image'), ['c1', 'c3'], 'a field alone: present');
    assert.deepEqual(await ids('id==c2'), ['c2']);
    assert.deepEqual(await ids('runtime.name==io.containerd.runc.v2'), ['c2', 'c3']);
    assert.deepEqual(await ids('runtime.name==io.containerd.runc.v2,labels.a==b'), ['c2']);
    assert.deepEqual(await ids('id==c1', 'id==c3'), ['c1', 'c3']);
    assert.deepEqual(await ids('snapshotter==overlayfs'), [], 'not a field containerd filters on');
    await assert.rejects(cs.list('a', ['id==']), code(Code.InvalidArgument, /^filters: parse error: \[id==\]: .*: invalid argument: invalid argument$/));
  }));

test('containers: update by field path, full replace, immutable fields, not found wording', () =>
  withStore(async (db) => {
    const rec = eventRecorder();
    let t = 0;
    const cs = new Containers(db, rec, () => ({ seconds: ++t, nanos: 5 }));
    await assert.rejects(cs.update('a', ctr('none'), []), code(Code.NotFound, /^cannot update container "none" in namespace "a": not found$/));
    await assert.rejects(cs.delete('a', 'none'), code(Code.NotFound, /^cannot delete container "none" in namespace "a": not found$/));
    await cs.create('a', ctr('u', { labels: { keep: '1', drop: '2' }, image: 'one', snapshotter: 'overlayfs', snapshot_key: 'k1', extensions: { e1: spec } }));
    await assert.rejects(cs.update('a', ctr('none'), []), code(Code.NotFound, /^container "none": not found$/));
    await assert.rejects(cs.delete('a', 'none'), code(Code.NotFound, /^container none: not found$/));
    await assert.rejects(cs.update('a', ctr(''), []), code(Code.InvalidArgument, /^Container.ID required$/));

    let u = await cs.update('a', ctr('u', { labels: { new: 'n' } }), ['labels.new', 'labels.drop']);
    assert.deepEqual(u.labels, { keep: '1', new: 'n' });
    assert.equal(u.image, 'one');
    assert.deepEqual(u.created_at, { seconds: 1, nanos: 5 });
    assert.deepEqual(u.updated_at, { seconds: 2, nanos: 5 });
    u = await cs.update('a', ctr('u', { image: 'two', snapshot_key: 'k2' }), ['image', 'snapshotkey']);
    assert.equal(u.image, 'two');
    assert.equal(u.snapshot_key, 'k2');
    for (const p of ['snapshotter', 'runtime', 'id', 'created_at']) {
      await assert.rejects(cs.update('a', ctr('u'), [p]), code(Code.InvalidArgument, new RegExp(`^cannot update "${p}" field on "u": invalid argument$`)));
    }
    await assert.rejects(cs.update('a', ctr('u', { spec: null }), ['spec']), code(Code.InvalidArgument, /^update failed validation: container.Spec must be set/));
    // a full replace must not change the immutable fields
    await assert.rejects(cs.update('a', ctr('u', { snapshotter: 'native' }), []), code(Code.InvalidArgument, /^container.Snapshotter field is immutable: invalid argument$/));
    await assert.rejects(
      cs.update('a', ctr('u', { snapshotter: 'overlayfs', runtime: { name: 'other', options: null } }), []),
      code(Code.InvalidArgument, /^container.Runtime.Name field is immutable/),
    );
    const ext: Any = { type_url: 'x', value: Uint8Array.from([1]) };
    u = await cs.update('a', ctr('u', { snapshotter: 'overlayfs', image: 'three', labels: { only: 'this' }, extensions: { e2: ext } }), []);
    assert.deepEqual(u.labels, { only: 'this' });
    assert.equal(u.image, 'three');
    assert.equal(u.snapshot_key, '', 'a full replace sets the snapshot key too');
    assert.deepEqual(Object.keys(u.extensions), ['e2']);
    // as in containerd, a replaced extensions map keeps the dropped keys in the store
    assert.deepEqual(Object.keys((await cs.get('a', 'u')).extensions).sort(), ['e1', 'e2']);
    u = await cs.update('a', ctr('u'), ['extensions.e3']);
    assert.deepEqual(u.extensions.e3, { type_url: '', value: Buffer.alloc(0) });

    const updates = rec.events.filter(([, topic]) => topic === '/containers/update');
    assert.equal(updates.length, 4, 'refused updates publish nothing');
    assert.deepEqual(updates[2]![2], { id: 'u', image: 'three', labels: { only: 'this' }, snapshot_key: '' });
  }));

test('containers: concurrent creates of one id have one winner and one event; hasAny, forget', () =>
  withStore(async (db) => {
    const rec = eventRecorder();
    const cs = new Containers(db, rec, () => ({ seconds: 1, nanos: 0 }));
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => cs.create('a', ctr('race', { image: String(i) }))));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as BerthError).code, Code.AlreadyExists);
    assert.equal(rec.events.length, 1);
    assert.equal(await cs.hasAny('a'), true);
    assert.equal(await cs.hasAny('b'), false);
    await cs.delete('a', 'race');
    assert.equal(await cs.hasAny('a'), false);
    await cs.forget('a');
    await assert.rejects(cs.delete('a', 'race'), code(Code.NotFound, /^cannot delete container "race" in namespace "a"/));
  }));
