// The blob files: digests, crash recovery, and what a crash at each step of a commit leaves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError, Code } from '@berth/errdefs';
import { goDuration, goTime } from './blobs.js';
import { digestOf, digestProblem } from './digest.js';
import { fixture, writeStream } from './testutil.js';

const ns = { namespace: 'default' };

test('digests are validated like go-digest', () => {
  assert.equal(digestProblem(digestOf('sha256', 'x')), undefined);
  assert.equal(digestProblem(digestOf('sha512', 'x')), undefined);
  assert.equal(digestProblem(digestOf('sha384', 'x')), undefined);
  assert.equal(digestProblem(''), 'invalid checksum digest format');
  assert.equal(digestProblem('sha256'), 'invalid checksum digest format');
  assert.equal(digestProblem('sha256:'), 'invalid checksum digest format');
  assert.equal(digestProblem(':abc'), 'invalid checksum digest format');
  assert.equal(digestProblem('sha256:abc'), 'invalid checksum digest length');
  assert.equal(digestProblem('sha256:' + 'A'.repeat(64)), 'invalid checksum digest format');
  assert.equal(digestProblem('md5:' + 'a'.repeat(32)), 'unsupported digest algorithm');
  assert.equal(digestProblem('MD5:abc'), 'invalid checksum digest format');
});

test('Go-style durations and times for lock messages', () => {
  assert.equal(goDuration(0.0005), '500ns');
  assert.equal(goDuration(0.25), '250µs');
  assert.equal(goDuration(12.5), '12.5ms');
  assert.equal(goDuration(1500), '1.5s');
  assert.equal(goDuration(61_000), '1m1s');
  assert.equal(goTime(new Date('2024-01-02T03:04:05.670Z')), '2024-01-02 03:04:05.67 +0000 UTC');
});

test('opening the store clears what a crash left half-made', async () => {
  const f = await fixture();
  const ingest = join(f.dir, 'ingest');
  mkdirSync(join(ingest, 'abc.tmp-1234')); // an ingest folder being built
  mkdirSync(join(ingest, 'nodata')); // a committed ingest whose folder was not yet removed
  writeFileSync(join(ingest, 'nodata', 'ref'), 'x');
  await writeStream(f.api, ns, [{ action: 'WRITE', ref: 'keep', data: Buffer.from('partial') }]);
  const kept = readdirSync(ingest).filter((n) => n !== 'abc.tmp-1234' && n !== 'nodata');
  writeFileSync(join(ingest, kept[0]!, 'updatedat.tmp'), 'torn');
  await f.restart();
  assert.deepEqual(readdirSync(ingest), kept);
  assert.ok(!existsSync(join(ingest, kept[0]!, 'updatedat.tmp')));
  assert.equal((await f.api.status({ ref: 'keep' }, ns)).status.offset, 7);
  await f.done();
});

test('a crash between the rename and the record: the ingest is gone, a retry with the digest commits at once', async () => {
  const f = await fixture();
  const data = Buffer.from('renamed but not recorded');
  const d = digestOf('sha256', data);
  const w = await f.content.writer(ns, 'r', data.length, d);
  await w.write(data);
  const backend = (w as unknown as { backend: { commit(size: number, e: string): Promise<string> } }).backend;
  await backend.commit(data.length, d); // the file is in blobs/; the process dies before the record
  await f.restart();
  await assert.rejects(f.api.info({ digest: d }, ns), (e: BerthError) => e.code === Code.NotFound);
  assert.deepEqual((await f.api.listStatuses({ filters: [] }, ns)).statuses, []);
  await assert.rejects(f.api.status({ ref: 'r' }, ns), (e: BerthError) => e.code === Code.NotFound);
  const { res, err } = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'r', total: data.length, expected: d },
    { action: 'COMMIT', offset: data.length, total: data.length, expected: d },
  ]);
  assert.equal(err, undefined);
  assert.equal(res[0]!.offset, data.length);
  assert.equal((await f.api.info({ digest: d }, ns)).info.size, data.length);
  await f.done();
});

test('a total that disagrees with the ingest starts it over; abort removes the data', async () => {
  const f = await fixture();
  await writeStream(f.api, ns, [{ action: 'WRITE', ref: 't', total: 100, data: Buffer.from('abc') }]);
  assert.equal((await f.api.status({ ref: 't' }, ns)).status.total, 100);
  const { res } = await writeStream(f.api, ns, [{ action: 'STAT', ref: 't', total: 50 }]);
  assert.equal(res[0]!.offset, 0);
  assert.equal((await f.api.status({ ref: 't' }, ns)).status.total, 50);
  await f.api.abort({ ref: 't' }, ns);
  assert.deepEqual(readdirSync(join(f.dir, 'ingest')), []);
  await f.done();
});

test('an abort waits for an open writer of the ref: Unavailable while it writes, done once it closed', async () => {
  const f = await fixture();
  const w = await f.content.writer(ns, 'busy', 0);
  await w.write(Buffer.from('abc'));
  await assert.rejects(f.api.abort({ ref: 'busy' }, ns), (e: unknown) => e instanceof BerthError && e.code === Code.Unavailable && /locked/.test(e.message));
  // the writer never lost its folder
  await w.write(Buffer.from('def'));
  assert.equal((await f.api.status({ ref: 'busy' }, ns)).status.offset, 6);
  await w.close();
  await f.api.abort({ ref: 'busy' }, ns);
  await assert.rejects(f.api.status({ ref: 'busy' }, ns), (e: unknown) => e instanceof BerthError && e.code === Code.NotFound);
  await f.done();
});
