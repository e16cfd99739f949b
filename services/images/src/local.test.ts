import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, type BerthError } from '@berth/errdefs';
import { openStore } from '@berth/store';
import { eventRecorder } from '@berth/bus';
import { Images, type Image } from './local.js';

const target = { media_type: 'application/vnd.oci.image.manifest.v1+json', digest: 'sha256:' + 'b'.repeat(64), size: 500, annotations: {} };
const img = (name: string, labels: Record<string, string> = {}): Image => ({ name, labels, target, created_at: null, updated_at: null });
const code = (c: number, re?: RegExp) => (e: BerthError) => e.code === c && (!re || re.test(e.message));

test('images: create, get, list with filters, update by field path, delete, events', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-images-'));
  const db = await openStore(dir);
  const rec = eventRecorder();
  const events = rec.events;
  let t = 0;
  const images = new Images(db, rec, () => ({ seconds: ++t, nanos: 0 }));
  try {
    await images.create('a', img('docker.io/library/busybox:latest', { x: '1' }));
    await images.create('a', img('example.com/other:1'));
    await assert.rejects(images.create('a', img('example.com/other:1')), code(Code.AlreadyExists, /^image "example.com\/other:1": already exists$/));
    await assert.rejects(images.create('a', { ...img('bad'), target: { ...target, digest: 'nope' } }), code(Code.InvalidArgument, /Target.Digest "nope" invalid/));
    await assert.rejects(images.create('a', { ...img('bad'), target: { ...target, size: 0 } }), code(Code.InvalidArgument, /Target.Size must be greater than zero/));
    await assert.rejects(images.create('a', img('')), code(Code.InvalidArgument, /Image.Name required/));
    assert.equal((await images.get('a', 'example.com/other:1')).created_at?.seconds, 2);
    await assert.rejects(images.get('b', 'example.com/other:1'), code(Code.NotFound, /^image "example.com\/other:1": not found$/));
    assert.deepEqual((await images.list('a', ['labels.x==1'])).map((i) => i.name), ['docker.io/library/busybox:latest']);
    assert.deepEqual((await images.list('a', ['name~=other'])).map((i) => i.name), ['example.com/other:1']);
    assert.equal((await images.list('a', [`target.digest==${target.digest}`])).length, 2);
    const u = await images.update('a', img('example.com/other:1', { y: '2' }), ['labels.y']);
    assert.deepEqual(u.labels, { y: '2' });
    assert.equal(u.created_at?.seconds, 2);
    await assert.rejects(images.update('a', img('example.com/other:1'), ['name']), code(Code.InvalidArgument, /cannot update "name" field on image/));
    await assert.rejects(images.update('a', img('missing'), []), code(Code.NotFound));
    assert.equal(await images.hasAny('a'), true);
    await images.delete('a', 'example.com/other:1');
    await assert.rejects(images.delete('a', 'example.com/other:1'), code(Code.NotFound));
    assert.deepEqual(events.map((e) => e[1]), ['/images/create', '/images/create', '/images/update', '/images/delete']);
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('images: concurrent creates of one name have one winner and one event', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-images-'));
  const db = await openStore(dir);
  const rec = eventRecorder();
  const images = new Images(db, rec, () => ({ seconds: 1, nanos: 0 }));
  try {
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => images.create('a', img('race:1'))));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    assert.equal(rec.events.length, 1);
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
