// Differ.apply without NATS: a blob from a stream (the content Read path) and from a file (the
// reading thread), digests checked both ways, and an overlay upperdir whose whiteouts and opaque
// folders a real overlay mount then honours.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { lgetxattr, mountAll, unmountAll } from '@berth/native';
import { Differ, type BlobOpener } from './local.js';
import { T } from './tar.js';
import { tarEnd, tarFile, tarHeader } from './tarwriter.js';

const dir = mkdtempSync('/tmp/berth-differ-test-');
test.after(() => rmSync(dir, { recursive: true, force: true }));

const tar = Buffer.concat([tarHeader({ name: 'd/', typeflag: T.dir }), tarFile({ name: 'd/f', mode: 0o640 }, Buffer.from('hello\n')), tarEnd()]);
const gz = gzipSync(tar);
const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

const fromStream = (b: Buffer): BlobOpener => async () => ({ stream: Readable.from([b.subarray(0, 10), b.subarray(10)]) });
function fromFile(b: Buffer): BlobOpener {
  const p = join(dir, `blob-${sha(b).slice(7, 19)}`);
  writeFileSync(p, b);
  return async () => ({ stream: Readable.from([]), path: p });
}

for (const [how, open] of [
  ['a stream', fromStream],
  ['a file', fromFile],
] as const) {
  test(`a gzip layer from ${how}: the tree, the tar's digest and size`, async () => {
    const root = mkdtempSync(join(dir, 'root-'));
    const d = await new Differ().apply(open(gz), { media_type: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(gz), size: gz.length }, [{ type: 'bind', source: root, options: ['rbind', 'rw'] }]);
    assert.deepEqual(d, { media_type: 'application/vnd.oci.image.layer.v1.tar', digest: sha(tar), size: tar.length });
    assert.equal(lstatSync(join(root, 'd/f')).mode & 0o777, 0o640);
  });

  test(`a blob from ${how} that does not match its descriptor is FailedPrecondition`, async () => {
    const root = mkdtempSync(join(dir, 'root-'));
    const other = gzipSync(Buffer.concat([tarFile({ name: 'x' }, Buffer.from('x')), tarEnd()]));
    await assert.rejects(
      new Differ().apply(open(other), { media_type: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(gz), size: gz.length }, [{ type: 'bind', source: root, options: ['rbind', 'rw'] }]),
      (e: Error & { code?: number }) => e.code === 9 && /does not match its descriptor/.test(e.message),
    );
  });
}

test('an overlay upperdir gets overlay whiteouts and opaque folders, which the mount honours', async () => {
  const lower = join(dir, 'lower');
  const upper = join(dir, 'upper');
  const work = join(dir, 'work');
  const merged = join(dir, 'merged');
  for (const d of [join(lower, 'd'), upper, work, merged]) mkdirSync(d, { recursive: true });
  writeFileSync(join(lower, 'a'), 'a');
  writeFileSync(join(lower, 'd', 'x'), 'x');
  const layer = Buffer.concat([
    tarFile({ name: '.wh.a', uid: 7, gid: 8 }, Buffer.alloc(0)),
    tarHeader({ name: 'd/', typeflag: T.dir }),
    tarFile({ name: 'd/.wh..wh..opq' }, Buffer.alloc(0)),
    tarFile({ name: 'd/y' }, Buffer.from('y')),
    tarEnd(),
  ]);
  const mount = { type: 'overlay', source: 'overlay', options: [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`] };
  await new Differ().apply(fromStream(layer), { media_type: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }, [mount]);
  const wh = lstatSync(join(upper, 'a'));
  assert.ok(wh.isCharacterDevice() && wh.rdev === 0 && wh.uid === 7 && wh.gid === 8);
  assert.equal(lgetxattr(join(upper, 'd'), 'trusted.overlay.opaque').toString(), 'y');
  mountAll({ type: 'overlay', source: 'overlay', options: [`lowerdir=${upper}:${lower}`] }, merged);
  try {
    assert.ok(!existsSync(join(merged, 'a')));
    assert.deepEqual(readdirSync(join(merged, 'd')), ['y']);
  } finally {
    unmountAll(merged);
  }
});

test('lowers pending: a layer that needs them is Aborted with its upperdir left empty, and applies again once they are in', async () => {
  const lower = mkdtempSync(join(dir, 'plower-'));
  mkdirSync(join(lower, 'p'), { mode: 0o700 });
  writeFileSync(join(lower, 'p', 'f'), 'lower');
  const overlay = (upper: string) => [{ type: 'overlay', source: 'overlay', options: [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${join(dir, 'pwork')}`] }];
  const plain = (b: Buffer) => ({ media_type: 'application/vnd.oci.image.layer.v1.tar', digest: sha(b), size: b.length });
  // complete in itself: applied while the lowers are pending, as without
  const whole = Buffer.concat([tarHeader({ name: 'q/', typeflag: T.dir, mode: 0o750 }), tarFile({ name: 'q/g' }, Buffer.from('g')), tarFile({ name: '.wh.x' }, Buffer.alloc(0)), tarEnd()]);
  const up1 = mkdtempSync(join(dir, 'pup-'));
  await new Differ().apply(fromStream(whole), plain(whole), overlay(up1), undefined, true);
  assert.deepEqual(readdirSync(up1).sort(), ['q', 'x']);
  assert.equal(lstatSync(join(up1, 'q')).mode & 0o777, 0o750);
  // a folder made on the way (its attributes are the lower's), after an entry that was applied
  for (const layer of [
    Buffer.concat([tarFile({ name: 'a' }, Buffer.from('a')), tarFile({ name: 'p/new' }, Buffer.from('n')), tarEnd()]),
    Buffer.concat([tarFile({ name: 'a' }, Buffer.from('a')), tarFile({ name: 'l', typeflag: T.link, linkname: 'p/f' }, Buffer.alloc(0)), tarEnd()]),
    Buffer.concat([tarFile({ name: 'a' }, Buffer.from('a')), tarFile({ name: '.wh..wh..opq' }, Buffer.alloc(0)), tarEnd()]),
  ]) {
    const upper = mkdtempSync(join(dir, 'pup-'));
    await assert.rejects(new Differ().apply(fromStream(layer), plain(layer), overlay(upper), undefined, true), (e: Error & { code?: number }) => e.code === 10);
    assert.deepEqual(readdirSync(upper), []);
    await new Differ().apply(fromStream(layer), plain(layer), overlay(upper));
    assert.ok(existsSync(join(upper, 'a')));
  }
  const upper = mkdtempSync(join(dir, 'pup-'));
  const layer = Buffer.concat([tarFile({ name: 'p/new' }, Buffer.from('n')), tarEnd()]);
  await new Differ().apply(fromStream(layer), plain(layer), overlay(upper));
  assert.equal(lstatSync(join(upper, 'p')).mode & 0o777, 0o700);
});

test('a growing ingest: applied while it is written, proven by the diff id; trouble is Aborted with the folder left empty', async () => {
  const big = randomBytes(3 << 20);
  const layer = Buffer.concat([tarHeader({ name: 'd/', typeflag: T.dir }), tarFile({ name: 'd/big', mode: 0o600 }, big), tarEnd()]);
  const blob = gzipSync(layer);
  const desc = { media_type: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(blob), size: blob.length };
  const never: BlobOpener = async () => {
    throw new Error('the committed blob is not read');
  };
  const bind = (root: string) => [{ type: 'bind', source: root, options: ['rbind', 'rw'] }];
  /** writes `b` to `path` in pieces, with pauses between (a download appending to its ingest) */
  async function grow(path: string, b: Buffer, piece = 256 << 10) {
    writeFileSync(path, '');
    for (let at = 0; at < b.length; at += piece) {
      await new Promise((r) => setTimeout(r, 5));
      appendFileSync(path, b.subarray(at, at + piece));
    }
  }

  // applied from the file as it grows: the tree and the tar's digest
  const root = mkdtempSync(join(dir, 'grow-'));
  const path = join(dir, 'ingest-data');
  const writing = grow(path, blob);
  const d = await new Differ().apply(never, desc, bind(root), undefined, false, { path, diffId: sha(layer) });
  await writing;
  assert.deepEqual(d, { media_type: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length });
  assert.ok(readFileSync(join(root, 'd/big')).equals(big));

  // without the diff id, the blob's digest is checked
  const root2 = mkdtempSync(join(dir, 'grow-'));
  assert.equal((await new Differ().apply(never, desc, bind(root2), undefined, false, { path })).digest, sha(layer));

  // bytes that are not the layer (same size), a diff id that is not this layer's
  for (const [bytes, diffId] of [
    [Buffer.concat([blob.subarray(0, blob.length - 8), Buffer.alloc(8)]), sha(layer)],
    [blob, sha(Buffer.from('another layer'))],
    [Buffer.concat([blob.subarray(0, 100), randomBytes(blob.length - 100)]), undefined],
  ] as const) {
    const r = mkdtempSync(join(dir, 'grow-'));
    const p = join(dir, 'ingest-bad');
    const w = grow(p, bytes);
    await assert.rejects(new Differ().apply(never, desc, bind(r), undefined, false, { path: p, ...(diffId ? { diffId } : {}) }), (e: Error & { code?: number }) => e.code === 10);
    await w;
    assert.deepEqual(readdirSync(r), []);
  }

  // the file gets shorter than what was read (the download started over)
  const r3 = mkdtempSync(join(dir, 'grow-'));
  const p3 = join(dir, 'ingest-trunc');
  writeFileSync(p3, blob.subarray(0, 1 << 20));
  const truncating = (async () => {
    await new Promise((r) => setTimeout(r, 100));
    writeFileSync(p3, blob.subarray(0, 1000));
  })();
  await assert.rejects(new Differ().apply(never, desc, bind(r3), undefined, false, { path: p3, diffId: sha(layer) }), (e: Error & { code?: number }) => e.code === 10 && /truncated/.test(e.message));
  await truncating;
  assert.deepEqual(readdirSync(r3), []);

  // a download that stalls: the caller's signal ends the wait
  const r4 = mkdtempSync(join(dir, 'grow-'));
  const p4 = join(dir, 'ingest-stall');
  writeFileSync(p4, blob.subarray(0, 1 << 20));
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('pull canceled')), 200);
  await assert.rejects(new Differ().apply(never, desc, bind(r4), ac.signal, false, { path: p4, diffId: sha(layer) }));

  // the file was gone before it was opened (the download ended and its commit moved it):
  // NotFound, which sends the caller to the committed blob, and nothing made
  const r5 = mkdtempSync(join(dir, 'grow-'));
  await assert.rejects(new Differ().apply(never, desc, bind(r5), undefined, false, { path: join(dir, 'ingest-gone'), diffId: sha(layer) }), (e: Error & { code?: number }) => e.code === 5 && /no longer there/.test(e.message));
  assert.deepEqual(readdirSync(r5), []);
});
