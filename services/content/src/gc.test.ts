// The content collector's file sweep: a blob file no namespace has goes at once (as containerd's
// cleanup after its metadata sweep), and a file a commit is installing is never taken between
// its move into blobs/ and the record that names it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CollectionBarrier, eventRecorder } from '@berth/bus';
import { openStore } from '@berth/store';
import { BlobStore } from './blobs.js';
import { digestOf } from './digest.js';
import { ContentCollector } from './gc.js';
import { Content } from './local.js';
import { ContentStore } from './store.js';
import { fixture } from './testutil.js';

const ctx = { namespace: 'default' };

test('a blob file no namespace has is removed by the next sweep, however young', async () => {
  const f = await fixture();
  try {
    const data = Buffer.from('collect me now');
    const d = digestOf('sha256', data);
    const w = await f.content.writer(ctx, 'r-young', data.length, d);
    await w.write(data);
    await w.commit(data.length, d);
    const collector = new ContentCollector(f.content, eventRecorder());
    assert.deepEqual(await collector.sweepFiles(), { removed: 0, bytes: 0 }, 'named by its record');
    await f.api.delete({ digest: d }, ctx);
    assert.deepEqual(await collector.sweepFiles(), { removed: 1, bytes: data.length });
    assert.equal(await f.blobs.stat(d), undefined, 'the file is gone');
  } finally {
    await f.done();
  }
});

test('a file installed by a commit whose record is not written yet stays: its ingest names it', async () => {
  const f = await fixture();
  try {
    const data = Buffer.from('being committed');
    const d = digestOf('sha256', data);
    const w = await f.content.writer(ctx, 'r-window', data.length, '');
    await w.write(data);
    // the first half of a commit, as NamespacedWriter.commit does it: name, then install
    await f.content.markCommitting(ctx.namespace, 'r-window', d);
    const backend = (w as unknown as { backend: { commit(size: number, expected?: string): Promise<string> } }).backend;
    assert.equal(await backend.commit(data.length), d);
    const collector = new ContentCollector(f.content, eventRecorder());
    assert.deepEqual(await collector.sweepFiles(), { removed: 0, bytes: 0 }, 'named by the committing ingest');
    assert.ok(await f.blobs.stat(d), 'still there');
    // the second half: the record, which removes the ingest in the same batch
    await f.content.recordCommit(ctx.namespace, undefined, 'r-window', d, data.length, {});
    assert.deepEqual(await collector.sweepFiles(), { removed: 0, bytes: 0 }, 'named by its record');
    assert.equal((await f.api.info({ digest: d }, ctx)).info.size, data.length);
  } finally {
    await f.done();
  }
});

test('files are untidy at start, after a write of a blob or ingest record, or while a sweep left one; tidy after a complete sweep', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-content-tidy-'));
  const db = await openStore(join(dir, 'meta'));
  try {
    // wired as the service wires it: the barrier tells the collector of every committed write
    let collector!: ContentCollector;
    const barrier = await CollectionBarrier.open(db, { written: (ops) => collector.noteWrites(ops) });
    const blobs = await BlobStore.open(dir);
    const content = new Content(blobs, new ContentStore(barrier.gate(db)), eventRecorder());
    collector = new ContentCollector(content, eventRecorder());
    assert.equal(collector.untidy(), true, 'a start may follow a crash that left a file');
    assert.deepEqual(await collector.sweepFiles(), { removed: 0, bytes: 0 });
    assert.equal(collector.untidy(), false, 'every file looked at');

    const data = Buffer.from('tidy or not');
    const d = digestOf('sha256', data);
    const w = await content.writer(ctx, 'r-tidy', data.length, d);
    assert.equal(collector.untidy(), true, 'the ingest record was written');
    await w.write(data);
    await w.commit(data.length, d);
    await collector.sweepFiles();
    assert.equal(collector.untidy(), false);
    await barrier.gate(db).put('other/key', 1);
    assert.equal(collector.untidy(), false, 'a write of another record changes no file name');
    await content.delete(ctx, d);
    assert.equal(collector.untidy(), true, 'a delete may leave the file without a name');
    assert.deepEqual(await collector.sweepFiles(), { removed: 1, bytes: data.length });
    assert.equal(collector.untidy(), false);

    // a collection's sweep that removes a record but stops before its file sweep: still untidy
    const d2 = digestOf('sha256', Buffer.from('swept record'));
    const w2 = await content.writer(ctx, 'r-swept', 12, d2);
    await w2.write(Buffer.from('swept record'));
    await w2.commit(12, d2);
    await collector.sweepFiles();
    assert.equal(collector.untidy(), false);
    let calls = 0;
    // as the collector runs it: past the barrier, whose writes noteWrites does not hear of
    await barrier.enter('e1', 10_000);
    await barrier.sweep('e1', Date.now() + 5000, () => collector.sweep({ content: [{ ns: ctx.namespace, digest: d2 }] }, () => ++calls <= 1));
    barrier.release('e1');
    assert.equal(await content.info(ctx, d2).catch(() => 'gone'), 'gone', 'the record went');
    assert.ok(await blobs.stat(d2), 'the file stayed: the sweep stopped before its file sweep');
    assert.equal(collector.untidy(), true, 'and the next collection looks at the files');
    await collector.sweepFiles();
    assert.equal(await blobs.stat(d2), undefined);

    // a file too young for a collector with a grace stays, and so does the need to look again
    const young = new ContentCollector(content, eventRecorder(), 60_000);
    await young.sweepFiles();
    assert.equal(young.untidy(), false);
    const orphan = Buffer.from('nobody names me');
    const od = digestOf('sha256', orphan);
    writeFileSync(blobs.blobPath(od), orphan);
    young.noteWrites([{ type: 'del', key: 'blob/x' }]);
    assert.deepEqual(await young.sweepFiles(), { removed: 0, bytes: 0 }, 'too young');
    assert.equal(young.untidy(), true, 'a file was left undecided');
    const old = new Date(Date.now() - 120_000);
    utimesSync(blobs.blobPath(od), old, old);
    assert.deepEqual(await young.sweepFiles(), { removed: 1, bytes: orphan.length });
    assert.equal(young.untidy(), false);
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
