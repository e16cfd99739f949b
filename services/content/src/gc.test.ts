// The content collector's file sweep: a blob file no namespace has goes at once (as containerd's
// cleanup after its metadata sweep), and a file a commit is installing is never taken between
// its move into blobs/ and the record that names it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventRecorder } from '@berth/bus';
import { digestOf } from './digest.js';
import { ContentCollector } from './gc.js';
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
