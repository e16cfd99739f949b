// Every time the Content API reports keeps nanoseconds (issue 13): a client that reads its own
// clock around a write finds Status and Info times between its readings, never before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compareTimestamps, nowTimestamp, type Timestamp } from '@berth/api';
import { digestOf } from './digest.js';
import { op } from './store.js';
import { fixture } from './testutil.js';

const ns = { namespace: 'default' };

function between(what: string, t: Timestamp | null | undefined, before: Timestamp, after: Timestamp): void {
  assert.ok(t, `${what} is set`);
  assert.ok(compareTimestamps(t, before) >= 0, `${what} ${JSON.stringify(t)} is before the client's ${JSON.stringify(before)}`);
  assert.ok(compareTimestamps(t, after) <= 0, `${what} ${JSON.stringify(t)} is after the client's ${JSON.stringify(after)}`);
}

// a millisecond clock gives nanos that are multiples of 1e6; a nanosecond one almost never
const subMillisecond = (ts: Timestamp[]) => ts.some((t) => t.nanos % 1e6 !== 0);

test('Status during a write and Info after the commit: nanoseconds, between the client clock readings', async () => {
  const f = await fixture();
  const data = Buffer.from('nanoseconds');
  const t0 = nowTimestamp();
  const w = await f.content.writer(ns, 'r1', data.length);
  const t1 = nowTimestamp();
  await w.write(data.subarray(0, 4));
  const t2 = nowTimestamp();
  const { status } = await f.api.status({ ref: 'r1' }, ns);
  between('started_at', status.started_at, t0, t1);
  between('updated_at', status.updated_at, t1, t2);
  await w.write(data.subarray(4));
  await w.commit(data.length, digestOf('sha256', data));
  const t3 = nowTimestamp();
  const { info } = await f.api.info({ digest: digestOf('sha256', data) }, ns);
  between('created_at', info.created_at, t2, t3);
  assert.deepEqual(info.updated_at, info.created_at);
  assert.ok(subMillisecond([status.started_at!, status.updated_at!, info.created_at!]));
  // an update moves updated_at on, with nanoseconds too
  const { info: updated } = await f.api.update({ info: { digest: info.digest, labels: { a: 'b' }, size: 0, created_at: null, updated_at: null }, update_mask: { paths: ['labels.a'] } }, ns);
  between('updated_at', updated.updated_at, t3, nowTimestamp());
  await f.done();
});

test('an ingest resumed after a restart keeps its nanosecond start', async () => {
  const f = await fixture();
  const w = await f.content.writer(ns, 'r2', 10);
  await w.write(Buffer.from('abc'));
  const before = (await f.api.status({ ref: 'r2' }, ns)).status;
  await w.close();
  await f.restart();
  const after = (await f.api.status({ ref: 'r2' }, ns)).status;
  assert.deepEqual(after.started_at, before.started_at);
  assert.equal(compareTimestamps(after.updated_at!, before.updated_at!), 0, 'the close wrote the last write time, nanoseconds included');
  await f.done();
});

test('records and ingest files written with milliseconds are still read', async () => {
  const f = await fixture();
  const data = Buffer.from('old record');
  const d = digestOf('sha256', data);
  // a blob with a record from before nanoseconds: times as ms numbers
  const w = await f.content.writer(ns, 'old', data.length);
  await w.write(data);
  await w.commit(data.length, d);
  await f.db.batch([op.putBlob('default', d, { size: data.length, created: 1700000000123, updated: 1700000000456, labels: {} })]);
  const { info } = await f.api.info({ digest: d }, ns);
  assert.deepEqual(info.created_at, { seconds: 1700000000, nanos: 123000000 });
  assert.deepEqual(info.updated_at, { seconds: 1700000000, nanos: 456000000 });
  // an ingest folder whose time files hold Date.toISOString's milliseconds
  const w2 = await f.content.writer(ns, 'old-ingest', 0);
  await w2.close();
  const dir = f.blobs.ingestPath('default/1/old-ingest');
  writeFileSync(join(dir, 'startedat'), '2023-11-14T22:13:20.120Z');
  writeFileSync(join(dir, 'updatedat'), '2023-11-14T22:13:20.250Z');
  const { status } = await f.api.status({ ref: 'old-ingest' }, ns);
  assert.deepEqual(status.started_at, { seconds: 1700000000, nanos: 120000000 });
  await f.done();
});
