// The Content API's semantics, driven through api.ts over the library (no NATS), checked
// against what containerd 1.6 answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError, Code } from '@berth/errdefs';
import { digestOf } from './digest.js';
import { bytes, fixture, openWrite, writeStream, type Fixture } from './testutil.js';

const ns = { namespace: 'default' };
const code = (c: number, msg?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof BerthError, `not a BerthError: ${String(e)}`);
  assert.equal(e.code, c, `code ${e.code} (${e.message})`);
  if (msg) assert.match(e.message, msg);
  return true;
};

/** Writes and commits `data` in 1 MiB chunks; returns the digest. */
async function put(f: Fixture, ctx: { namespace: string; lease?: string }, data: Buffer, ref = `ref-${digestOf('sha256', data)}`, labels: Record<string, string> = {}) {
  const d = digestOf('sha256', data);
  const reqs: Parameters<typeof writeStream>[2] = [{ action: 'STAT', ref, total: data.length, expected: d }];
  for (let o = 0; o < data.length; o += 1 << 20) reqs.push({ action: 'WRITE', offset: o, data: data.subarray(o, o + (1 << 20)) });
  reqs.push({ action: 'COMMIT', offset: data.length, total: data.length, expected: d, labels });
  const { err } = await writeStream(f.api, ctx, reqs);
  if (err) throw err;
  return d;
}

async function readAll(f: Fixture, ctx: { namespace: string }, digest: string, offset = 0, size = 0) {
  const chunks: { offset: number; data: Buffer }[] = [];
  await f.api.read({ digest, offset, size }, ctx, async (m) => void chunks.push({ offset: Number(m.offset), data: Buffer.from(m.data as Uint8Array) }));
  return chunks;
}

test('write, commit, info, read back: the whole answer sequence', async () => {
  const f = await fixture();
  const data = Buffer.from('hello berth');
  const d = digestOf('sha256', data);
  const { res, err } = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'r1', total: data.length, expected: d },
    { action: 'WRITE', offset: 0, data: data.subarray(0, 5) },
    { action: 'COMMIT', offset: 5, data: data.subarray(5), total: data.length, expected: d, labels: { a: 'b' } },
  ]);
  assert.equal(err, undefined);
  assert.deepEqual(
    res.map((r) => [r.action, r.offset, r.total]),
    [
      ['STAT', 0, data.length],
      ['WRITE', 5, data.length],
      ['COMMIT', data.length, data.length],
      ['COMMIT', data.length, data.length], // containerd sends the last answer once more
    ],
  );
  assert.equal(res[0]!.digest, digestOf('sha256', ''));
  assert.equal(res[2]!.digest, d);
  const { info } = await f.api.info({ digest: d }, ns);
  assert.equal(info.digest, d);
  assert.equal(info.size, data.length);
  assert.deepEqual(info.labels, { a: 'b' });
  assert.ok(info.created_at && info.updated_at);
  assert.equal(Buffer.concat((await readAll(f, ns, d)).map((c) => c.data)).toString(), 'hello berth');
  // on disk: blobs/<alg>/<hex>, read-only; the ingest folder is gone
  const p = join(f.dir, 'blobs', 'sha256', d.slice(7));
  assert.equal(readFileSync(p, 'utf8'), 'hello berth');
  assert.equal(statSync(p).mode & 0o777, 0o444);
  assert.deepEqual((await f.api.listStatuses({ filters: [] }, ns)).statuses, []);
  await f.done();
});

test('requests are validated as containerd does', async () => {
  const f = await fixture();
  await assert.rejects(f.api.info({ digest: 'nope' }, ns), code(Code.InvalidArgument, /^"nope" failed validation$/));
  await assert.rejects(f.api.info({ digest: 'sha256:abc' }, ns), code(Code.InvalidArgument));
  await assert.rejects(f.api.delete({ digest: 'sha256:xyz' }, ns), code(Code.InvalidArgument, /^invalid checksum digest length$/));
  await assert.rejects(f.api.read({ digest: 'md5:' + 'a'.repeat(32), offset: 0, size: 0 }, ns, async () => {}), code(Code.InvalidArgument, /^md5:a+: unsupported digest algorithm$/));
  const missing = digestOf('sha256', 'missing');
  await assert.rejects(f.api.info({ digest: missing }, ns), code(Code.NotFound, new RegExp(`^content digest ${missing}: not found$`)));
  await assert.rejects(f.api.info({ digest: missing }, {}), code(Code.FailedPrecondition, /^namespace is required: failed precondition$/));
  await assert.rejects(f.api.info({ digest: missing }, { namespace: 'bad ns' }), code(Code.InvalidArgument, /^namespace validation: identifier "bad ns" must match/));
  const first = await writeStream(f.api, ns, [{ action: 'STAT' }]);
  assert.ok(first.err && code(Code.InvalidArgument, /^first message must have a reference$/)(first.err));
  const empty = await writeStream(f.api, ns, []);
  assert.ok(empty.err && code(Code.Unknown, /^EOF$/)(empty.err));
  await assert.rejects(f.api.status({ ref: 'none' }, ns), code(Code.NotFound, /^could not get status for ref "none": reference none: not found$/));
  await assert.rejects(f.api.abort({ ref: 'none' }, ns), code(Code.NotFound, /^reference none: not found$/));
  await f.done();
});

test('an interrupted write resumes from the offset Status reports, also after a restart', async () => {
  const f = await fixture();
  const data = bytes(3 * (1 << 20) + 1234);
  const d = digestOf('sha256', data);
  const cut = 2 * (1 << 20) + 17;
  // the client goes away mid-stream
  const first = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'layer', total: data.length, expected: d },
    { action: 'WRITE', offset: 0, data: data.subarray(0, 1 << 20) },
    { action: 'WRITE', offset: 1 << 20, data: data.subarray(1 << 20, cut) },
    new Error('connection reset'),
  ]);
  assert.match(first.err!.message, /connection reset/);
  const { status } = await f.api.status({ ref: 'layer' }, ns);
  assert.equal(status.offset, cut);
  assert.equal(status.total, data.length);
  assert.equal(status.ref, 'layer');
  const listed = (await f.api.listStatuses({ filters: [] }, ns)).statuses;
  assert.deepEqual(listed.map((s) => [s.ref, s.offset]), [['layer', cut]]);

  // the service restarts (the data file and the record survive), then the client resumes
  await f.restart();
  const again = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'layer', total: data.length, expected: d },
    { action: 'WRITE', offset: cut, data: data.subarray(cut) },
    { action: 'COMMIT', offset: data.length, total: data.length, expected: d },
  ]);
  assert.equal(again.err, undefined);
  assert.equal(again.res[0]!.offset, cut, 'STAT reports where to resume');
  assert.equal(again.res[2]!.digest, d);
  assert.equal((await f.api.info({ digest: d }, ns)).info.size, data.length);
  assert.ok(Buffer.concat((await readAll(f, ns, d)).map((c) => c.data)).equals(data));
  await f.done();
});

test('a write at the wrong offset is OutOfRange; offset 0 on a started ingest starts it over', async () => {
  const f = await fixture();
  const w = openWrite(f.api, ns);
  await w.send({ action: 'STAT', ref: 'o' });
  assert.equal((await w.send({ action: 'WRITE', offset: 0, data: Buffer.from('abcdef') })).offset, 6);
  const restarted = await w.send({ action: 'WRITE', offset: 0, data: Buffer.from('xy') });
  assert.equal(restarted.offset, 2);
  assert.equal(restarted.digest, digestOf('sha256', 'xy'));
  await assert.rejects(w.send({ action: 'WRITE', offset: 5, data: Buffer.from('z') }), code(Code.OutOfRange, /^write @5 must occur at current offset 2$/));
  await assert.rejects(w.done);
  // the stream failed; the ingest stays with what was written
  assert.equal((await f.api.status({ ref: 'o' }, ns)).status.offset, 2);
  await f.done();
});

test('one writer per ref: a second one gets Unavailable "ref ... locked"', async () => {
  const f = await fixture();
  const a = openWrite(f.api, ns);
  await a.send({ action: 'STAT', ref: 'busy' });
  await a.send({ action: 'WRITE', offset: 0, data: Buffer.from('12345') });
  const b = await writeStream(f.api, ns, [{ action: 'STAT', ref: 'busy' }]);
  assert.ok(b.err);
  code(Code.Unavailable, /^ref default\/1\/busy locked for [0-9.]+(ns|µs|ms|s) \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC\): unavailable$/)(b.err);
  // the first writer carries on, and once it is gone the ref can be resumed
  await a.send({ action: 'WRITE', offset: 5, data: Buffer.from('678') });
  a.end();
  await a.done;
  const c = await writeStream(f.api, ns, [{ action: 'STAT', ref: 'busy' }]);
  assert.equal(c.err, undefined);
  assert.equal(c.res[0]!.offset, 8);
  // the same ref in another namespace is another ingest
  const other = openWrite(f.api, { namespace: 'other' });
  const b2 = openWrite(f.api, ns);
  await other.send({ action: 'STAT', ref: 'busy' });
  assert.equal((await b2.send({ action: 'STAT', ref: 'busy' })).offset, 8);
  other.end();
  b2.end();
  await Promise.all([other.done, b2.done]);
  await f.done();
});

test('commit verifies size and digest: FailedPrecondition, and the ingest stays resumable', async () => {
  const f = await fixture();
  const data = Buffer.from('twelve bytes');
  const d = digestOf('sha256', data);
  const wrongSize = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'm' },
    { action: 'COMMIT', offset: 0, data, total: data.length + 1 },
  ]);
  code(Code.FailedPrecondition, /^"m" failed size validation: 12 != 13: failed precondition$/)(wrongSize.err);
  assert.equal((await f.api.status({ ref: 'm' }, ns)).status.offset, data.length);
  const wrongDigest = digestOf('sha256', 'something else');
  const bad = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'm' },
    { action: 'COMMIT', offset: data.length, total: data.length, expected: wrongDigest },
  ]);
  code(Code.FailedPrecondition, new RegExp(`^unexpected commit digest ${d}, expected ${wrongDigest}: failed precondition$`))(bad.err);
  assert.equal((await f.api.status({ ref: 'm' }, ns)).status.offset, data.length);
  // an expected digest that is not even a digest fails the same way at commit
  const garbage = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'm' },
    { action: 'COMMIT', offset: data.length, expected: 'not-a-digest' },
  ]);
  code(Code.FailedPrecondition, /unexpected commit digest/)(garbage.err);
  // a total given up front that the data overshoots is caught at commit too
  const ok = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'm' },
    { action: 'COMMIT', offset: data.length, total: data.length, expected: d },
  ]);
  assert.equal(ok.err, undefined);
  assert.equal((await f.api.info({ digest: d }, ns)).info.size, data.length);
  await assert.rejects(f.api.status({ ref: 'm' }, ns), code(Code.NotFound));
  await f.done();
});

test('committing content that exists answers AlreadyExists and removes the ingest', async () => {
  const f = await fixture();
  const data = Buffer.from('already here');
  const d = await put(f, ns, data, 'first');
  // 1. the bytes written again under another ref, no expected digest: found at commit
  const again = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'second' },
    { action: 'COMMIT', offset: 0, data },
  ]);
  code(Code.AlreadyExists, new RegExp(`^content ${d}: already exists$`))(again.err);
  await assert.rejects(f.api.status({ ref: 'second' }, ns), code(Code.NotFound));
  assert.deepEqual((await f.api.listStatuses({ filters: [] }, ns)).statuses, []);
  // 2. expected digest on the opening message: refused before anything is written
  const open = await writeStream(f.api, ns, [{ action: 'STAT', ref: 'third', expected: d }]);
  code(Code.AlreadyExists, new RegExp(`^content ${d}: already exists$`))(open.err);
  await assert.rejects(f.api.status({ ref: 'third' }, ns), code(Code.NotFound));
  // 3. expected digest named only later: the ingest is aborted
  const late = await writeStream(f.api, ns, [
    { action: 'STAT', ref: 'fourth' },
    { action: 'WRITE', offset: 0, data: data.subarray(0, 3) },
    { action: 'COMMIT', offset: 3, data: data.subarray(3), expected: d },
  ]);
  code(Code.AlreadyExists, new RegExp(`^blob with expected digest ${d} exists$`))(late.err);
  await assert.rejects(f.api.status({ ref: 'fourth' }, ns), code(Code.NotFound));
  const ingests = (await import('node:fs')).readdirSync(join(f.dir, 'ingest'));
  assert.deepEqual(ingests, []);
  await f.done();
});

test('concurrent writers of different blobs', async () => {
  const f = await fixture();
  const blobs = Array.from({ length: 8 }, (_, i) => bytes(300_000 + i * 777, i + 1));
  const writers = blobs.map(() => openWrite(f.api, ns));
  await Promise.all(writers.map((w, i) => w.send({ action: 'STAT', ref: `c${i}`, total: blobs[i]!.length })));
  // interleave the chunks of all writers
  for (let o = 0; o < 400_000; o += 64 * 1024) {
    await Promise.all(
      writers.map((w, i) => {
        const b = blobs[i]!;
        return o < b.length ? w.send({ action: 'WRITE', offset: o, data: b.subarray(o, o + 64 * 1024) }) : undefined;
      }),
    );
  }
  const commits = await Promise.all(writers.map((w, i) => w.send({ action: 'COMMIT', offset: blobs[i]!.length, total: blobs[i]!.length, expected: digestOf('sha256', blobs[i]!) })));
  await Promise.all(writers.map((w) => w.done));
  assert.deepEqual(
    commits.map((c) => c.digest),
    blobs.map((b) => digestOf('sha256', b)),
  );
  const infos = [];
  for await (const i of f.content.list(ns)) infos.push(i.digest);
  assert.deepEqual(infos, blobs.map((b) => digestOf('sha256', b)).sort());
  for (const b of blobs) assert.ok(Buffer.concat((await readAll(f, ns, digestOf('sha256', b))).map((c) => c.data)).equals(b));
  await f.done();
});

test('namespaces: shared blobs, separate records and labels', async () => {
  const f = await fixture();
  const a = { namespace: 'a' };
  const b = { namespace: 'b' };
  const data = bytes(2 * (1 << 20) + 5);
  const d = await put(f, a, data, 'x', { owner: 'a' });
  await assert.rejects(f.api.info({ digest: d }, b), code(Code.NotFound, /^content digest sha256:[0-9a-f]+: not found$/));
  await assert.rejects(readAll(f, b, d), code(Code.NotFound));
  assert.deepEqual(await f.content.usage('a'), ['blobs']);
  assert.deepEqual(await f.content.usage('b'), []);
  // b names the digest it expects: the blob on disk is adopted without sending the bytes
  const { res, err } = await writeStream(f.api, b, [
    { action: 'STAT', ref: 'y', total: data.length, expected: d },
    { action: 'COMMIT', offset: data.length, total: data.length, expected: d, labels: { owner: 'b' } },
  ]);
  assert.equal(err, undefined);
  assert.equal(res[0]!.offset, data.length, 'nothing left to write');
  assert.equal(res[0]!.digest, d);
  assert.deepEqual((await f.api.info({ digest: d }, b)).info.labels, { owner: 'b' });
  assert.deepEqual((await f.api.info({ digest: d }, a)).info.labels, { owner: 'a' });
  // deleting in one namespace leaves the other's
  await f.api.delete({ digest: d }, b);
  await assert.rejects(f.api.info({ digest: d }, b), code(Code.NotFound));
  assert.equal((await f.api.info({ digest: d }, a)).info.size, data.length);
  assert.deepEqual(f.events, [['b', '/content/delete', { digest: d }]]);
  await assert.rejects(f.api.delete({ digest: d }, b), code(Code.NotFound));
  // a size that disagrees with the shared blob means no sharing: the bytes must come
  const mismatch = await writeStream(f.api, b, [{ action: 'STAT', ref: 'z', total: 3, expected: d }]);
  assert.equal(mismatch.res[0]!.offset, 0);
  // a shared writer that writes anyway starts a real ingest from the shared bytes
  const c = { namespace: 'c' };
  const w = openWrite(f.api, c);
  assert.equal((await w.send({ action: 'STAT', ref: 'again', expected: d })).offset, data.length);
  const restarted = await w.send({ action: 'WRITE', offset: 0, data: data.subarray(0, 10) });
  assert.equal(restarted.offset, 10);
  await w.send({ action: 'COMMIT', offset: 10, data: data.subarray(10), expected: d });
  await w.done;
  assert.equal((await f.api.info({ digest: d }, c)).info.size, data.length);
  await f.done();
});

test('isolated sharing policy: another namespace must send the bytes', async () => {
  const f = await fixture({ shared: false });
  const data = Buffer.from('isolated');
  const d = await put(f, { namespace: 'a' }, data);
  const { res } = await writeStream(f.api, { namespace: 'b' }, [{ action: 'STAT', ref: 'r', total: data.length, expected: d }]);
  assert.equal(res[0]!.offset, 0);
  await put(f, { namespace: 'b' }, data, 'r');
  assert.equal((await f.api.info({ digest: d }, { namespace: 'b' })).info.size, data.length);
  await f.done();
});

test('read with offset and size, in 1 MiB chunks counted from the read start', async () => {
  const f = await fixture();
  const data = bytes(2 * (1 << 20) + 100);
  const d = await put(f, ns, data);
  const all = await readAll(f, ns, d);
  assert.deepEqual(all.map((c) => [c.offset, c.data.length]), [[0, 1 << 20], [1 << 20, 1 << 20], [2 << 20, 100]]);
  const mid = await readAll(f, ns, d, 1000, 5000);
  assert.deepEqual(mid.map((c) => [c.offset, c.data.length]), [[0, 5000]]);
  assert.ok(mid[0]!.data.equals(data.subarray(1000, 6000)));
  // size past the end, or 0: to the end
  const tail = await readAll(f, ns, d, data.length - 10, 1000);
  assert.ok(Buffer.concat(tail.map((c) => c.data)).equals(data.subarray(-10)));
  assert.equal(Buffer.concat((await readAll(f, ns, d, 5, 0)).map((c) => c.data)).length, data.length - 5);
  // negative offset reads from 0; at the end nothing; past it OutOfRange
  assert.equal(Buffer.concat((await readAll(f, ns, d, -4, 3)).map((c) => c.data)).toString('hex'), data.subarray(0, 3).toString('hex'));
  assert.deepEqual(await readAll(f, ns, d, data.length, 0), []);
  await assert.rejects(readAll(f, ns, d, data.length + 1), code(Code.OutOfRange, new RegExp(`^read past object length ${data.length} bytes$`)));
  await f.done();
});

test('update by field paths; labels validated', async () => {
  const f = await fixture();
  const d = await put(f, ns, Buffer.from('labels'), 'l', { a: '1', b: '2' });
  const before = (await f.api.info({ digest: d }, ns)).info;
  let r = await f.api.update({ info: { digest: d, labels: { b: '', c: '3', ignored: 'x' }, size: 0, created_at: null, updated_at: null }, update_mask: { paths: ['labels.b', 'labels.c'] } }, ns);
  assert.deepEqual(r.info.labels, { a: '1', c: '3' });
  assert.ok(Number(r.info.updated_at!.seconds) * 1e9 + r.info.updated_at!.nanos >= Number(before.updated_at!.seconds) * 1e9 + before.updated_at!.nanos);
  assert.deepEqual(r.info.created_at, before.created_at);
  r = await f.api.update({ info: { digest: d, labels: { z: '9' }, size: 0, created_at: null, updated_at: null }, update_mask: { paths: ['labels'] } }, ns);
  assert.deepEqual(r.info.labels, { z: '9' });
  r = await f.api.update({ info: { digest: d, labels: { y: '8' }, size: 0, created_at: null, updated_at: null }, update_mask: null }, ns);
  assert.deepEqual(r.info.labels, { y: '8' });
  assert.deepEqual((await f.api.info({ digest: d }, ns)).info.labels, { y: '8' });
  await assert.rejects(
    f.api.update({ info: { digest: d, labels: {}, size: 5, created_at: null, updated_at: null }, update_mask: { paths: ['size'] } }, ns),
    code(Code.InvalidArgument, new RegExp(`^cannot update "size" field on content info "${d}": invalid argument$`)),
  );
  await assert.rejects(
    f.api.update({ info: { digest: d, labels: { big: 'v'.repeat(5000) }, size: 0, created_at: null, updated_at: null }, update_mask: { paths: ['labels.big'] } }, ns),
    code(Code.InvalidArgument, /^info\.Labels: label key and value greater than maximum size \(4096 bytes\), key: big/),
  );
  await assert.rejects(f.api.update({ info: null, update_mask: null }, ns), code(Code.InvalidArgument, /^"" failed validation$/));
  const missing = digestOf('sha256', 'nothing');
  await assert.rejects(f.api.update({ info: { digest: missing, labels: {}, size: 0, created_at: null, updated_at: null }, update_mask: null }, ns), code(Code.NotFound));
  // labels at commit are validated too
  const tooBig = await writeStream(f.api, ns, [{ action: 'STAT', ref: 'big' }, { action: 'COMMIT', data: Buffer.from('x'), labels: { k: 'v'.repeat(4096) } }]);
  code(Code.InvalidArgument, /^info\.Labels: label key and value greater than maximum size/)(tooBig.err);
  await f.done();
});

test('list and list statuses with filters', async () => {
  const f = await fixture();
  const d1 = await put(f, ns, Buffer.from('one'), 'r1', { kind: 'layer', 'containerd.io/gc.ref': 'x' });
  const d2 = await put(f, ns, Buffer.from('two'), 'r2', { kind: 'config' });
  const d3 = await put(f, ns, Buffer.from('three'), 'r3');
  const list = async (filters: string[]) => {
    const got: { digest?: string; updated_at?: unknown }[] = [];
    await f.api.list({ filters }, ns, async (m) => void got.push(...m.info));
    return got;
  };
  assert.deepEqual((await list([])).map((i) => i.digest), [d1, d2, d3].sort());
  assert.equal((await list([]))[0]!.updated_at, undefined, 'List leaves updated_at out, like containerd');
  assert.deepEqual((await list(['labels.kind==layer'])).map((i) => i.digest), [d1]);
  assert.deepEqual((await list(['labels.kind==layer', 'labels.kind==config'])).map((i) => i.digest).sort(), [d1, d2].sort());
  assert.deepEqual((await list(['labels.kind'])).map((i) => i.digest).sort(), [d1, d2].sort());
  assert.deepEqual((await list([`digest==${d3}`])).map((i) => i.digest), [d3]);
  assert.deepEqual((await list(['labels."containerd.io/gc.ref"==x'])).map((i) => i.digest), [d1]);
  assert.deepEqual(await list(['size==3']), []);
  assert.deepEqual(await list([]).then(() => list(['labels.kind~=^lay'])).then((l) => l.map((i) => i.digest)), [d1]);
  await assert.rejects(list(['labels.kind==']), code(Code.InvalidArgument));

  // 250 blobs come in batches of 100
  const g = await fixture();
  for (let i = 0; i < 250; i++) await put(g, ns, Buffer.from(`blob ${i}`), `b${i}`);
  const sizes: number[] = [];
  await g.api.list({ filters: [] }, ns, async (m) => void sizes.push(m.info.length));
  assert.deepEqual(sizes, [100, 100, 50]);
  await g.done();

  for (const ref of ['pull-a', 'pull-b', 'push-c']) await writeStream(f.api, ns, [{ action: 'WRITE', ref, data: Buffer.from(ref) }]);
  const refs = async (filters: string[]) => (await f.api.listStatuses({ filters }, ns)).statuses.map((s) => s.ref);
  assert.deepEqual(await refs([]), ['pull-a', 'pull-b', 'push-c']);
  assert.deepEqual(await refs(['ref~=^pull']), ['pull-a', 'pull-b']);
  assert.deepEqual(await refs(['ref==push-c']), ['push-c']);
  assert.deepEqual(await f.api.listStatuses({ filters: [] }, { namespace: 'elsewhere' }).then((r) => r.statuses), []);
  await f.api.abort({ ref: 'pull-a' }, ns);
  assert.deepEqual(await refs([]), ['pull-b', 'push-c']);
  await f.done();
});

test('sha512 and sha384 digests', async () => {
  const f = await fixture();
  const data = bytes(1500_000, 7);
  for (const alg of ['sha512', 'sha384'] as const) {
    const d = digestOf(alg, data);
    // named at open: hashed with it from the start
    const { err, res } = await writeStream(f.api, ns, [
      { action: 'STAT', ref: `up-front-${alg}`, total: data.length, expected: d },
      { action: 'WRITE', offset: 0, data: data.subarray(0, 1000) },
      { action: 'COMMIT', offset: 1000, data: data.subarray(1000), total: data.length, expected: d },
    ]);
    assert.equal(err, undefined);
    assert.equal(res[2]!.digest, d);
    assert.equal((await f.api.info({ digest: d }, ns)).info.size, data.length);
    assert.ok(statSync(join(f.dir, 'blobs', alg, d.split(':')[1]!)).isFile());
    assert.ok(Buffer.concat((await readAll(f, ns, d)).map((c) => c.data)).equals(data));
  }
  // named only at commit: the data is hashed again with that algorithm
  const other = Buffer.from('late sha512');
  const d = digestOf('sha512', other);
  const late = await writeStream(f.api, ns, [{ action: 'STAT', ref: 'late' }, { action: 'COMMIT', data: other, expected: d }]);
  assert.equal(late.err, undefined);
  assert.equal(late.res[1]!.digest, d);
  assert.equal((await f.api.info({ digest: d }, ns)).info.size, other.length);
  await f.done();
});

test('leases: ingests and content written under a lease are recorded with the lease, references first', async () => {
  // the leases service's side, faked: what it holds per lease, and the order of calls
  const held = new Map<string, Set<string>>([['pull-1', new Set()], ['pull-2', new Set()]]);
  const calls: string[] = [];
  const leases = {
    async add(_ns: string, lease: string, r: { type: string; id: string }) {
      calls.push(`+${r.type}`);
      if (!held.has(lease)) throw new BerthError(Code.NotFound, 'lease does not exist: not found');
      held.get(lease)!.add(`${r.type}:${r.id}`);
    },
    async remove(_ns: string, lease: string, r: { type: string; id: string }) {
      calls.push(`-${r.type}`);
      held.get(lease)?.delete(`${r.type}:${r.id}`);
    },
  };
  const f = await fixture({ leases });
  const of = (l: string) => [...held.get(l)!];
  const ctx = { namespace: 'default', lease: 'pull-1' };
  const w = openWrite(f.api, ctx);
  await w.send({ action: 'STAT', ref: 'leased' });
  assert.deepEqual(of('pull-1'), ['ingests:leased']);
  const data = Buffer.from('leased content');
  await w.send({ action: 'COMMIT', data });
  await w.done;
  const d = digestOf('sha256', data);
  assert.deepEqual(of('pull-1'), [`content:${d}`]);
  // the content's reference was taken before the ingest's was dropped
  assert.deepEqual(calls, ['+ingests', '+content', '-ingests']);
  // opening a write for content that exists still adds it to the lease
  const exists = await writeStream(f.api, { namespace: 'default', lease: 'pull-2' }, [{ action: 'STAT', ref: 'again', expected: d }]);
  code(Code.AlreadyExists)(exists.err);
  assert.deepEqual(of('pull-2'), [`content:${d}`]);
  // deleting under the lease drops the reference; an abort drops the ingest's
  await f.api.delete({ digest: d }, ctx);
  assert.deepEqual(of('pull-1'), []);
  await writeStream(f.api, ctx, [{ action: 'WRITE', ref: 'dropped', data: Buffer.from('x') }]);
  assert.deepEqual(of('pull-1'), ['ingests:dropped']);
  await f.api.abort({ ref: 'dropped' }, ctx);
  assert.deepEqual(of('pull-1'), []);
  // a lease that does not exist refuses the write, as containerd does, and leaves no ingest
  const refused = await writeStream(f.api, { namespace: 'default', lease: 'unknown' }, [{ action: 'STAT', ref: 'r' }]);
  code(Code.NotFound, /^lease does not exist: not found$/)(refused.err);
  await assert.rejects(f.api.status({ ref: 'r' }, ns), code(Code.NotFound));
  await f.done();
});

test('the fast path: a committed blob file, only for namespaces that can see it', async () => {
  const f = await fixture();
  const data = Buffer.from('read me by path');
  const d = await put(f, ns, data);
  const p = await f.content.blobPath(ns, d);
  assert.equal(p.size, data.length);
  assert.equal(readFileSync(p.path, 'utf8'), 'read me by path');
  await assert.rejects(f.content.blobPath({ namespace: 'other' }, d), code(Code.NotFound));
  await assert.rejects(f.content.blobPath(ns, 'sha256:zz'), code(Code.InvalidArgument));
  await f.done();
});

test('ingestFile: a same-node writer appends to the ingest file itself; the commit still verifies every byte', async () => {
  const f = await fixture();
  const { appendFileSync } = await import('node:fs');
  const data = bytes(3 << 20, 7);
  const d = digestOf('sha256', data);
  const a = await f.content.ingestFile(ns, 'layer-a', data.length, d);
  assert.deepEqual([a.offset, a.shared], [0, false]);
  appendFileSync(a.path, data.subarray(0, 1 << 20));
  // resumed: the offset is what the file holds
  const b = await f.content.ingestFile(ns, 'layer-a', data.length, d);
  assert.equal(b.offset, 1 << 20);
  appendFileSync(b.path, data.subarray(1 << 20));
  const { err } = await writeStream(f.api, ns, [{ action: 'COMMIT', ref: 'layer-a', offset: data.length, total: data.length, expected: d }]);
  assert.equal(err, undefined);
  assert.equal((await f.content.info(ns, d)).size, data.length);
  await assert.rejects(f.content.ingestFile(ns, 'layer-a', data.length, d), code(Code.AlreadyExists));
  // bytes that are not the expected ones fail the commit
  const c = await f.content.ingestFile(ns, 'layer-b', 4, digestOf('sha256', Buffer.from('abcd')));
  appendFileSync(c.path, 'abce');
  const bad = await writeStream(f.api, ns, [{ action: 'COMMIT', ref: 'layer-b', offset: 4, total: 4, expected: digestOf('sha256', Buffer.from('abcd')) }]);
  assert.ok(bad.err && code(Code.FailedPrecondition, /unexpected commit digest/)(bad.err));
  // another namespace's blob: nothing to write
  const other = await f.content.ingestFile({ namespace: 'other' }, 'layer-a', data.length, d);
  assert.equal(other.shared, true);
});
