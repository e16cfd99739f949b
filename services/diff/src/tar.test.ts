// The tar reader against archives GNU tar writes in each format (sparse forms included), and
// against our writer's PAX, GNU long-name and base-256 headers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, symlinkSync, mkdirSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { TarReader, T, type TarHeader } from './tar.js';
import { tarEnd, tarFile, tarHeader } from './tarwriter.js';

async function read(tar: Buffer): Promise<{ h: TarHeader; data: Buffer }[]> {
  const r = new TarReader(Readable.from([tar]));
  const out: { h: TarHeader; data: Buffer }[] = [];
  for (let h; (h = await r.next()); ) {
    const data = Buffer.alloc(h.typeflag === T.reg ? h.size : 0);
    for await (const { offset, chunk } of r.data()) chunk.copy(data, offset);
    out.push({ h, data });
  }
  return out;
}

const dir = mkdtempSync('/tmp/berth-tar-test-');
const src = join(dir, 'src');
mkdirSync(src);
const sparseSize = 3 << 20;
const fd = openSync(join(src, 'sparse'), 'w');
writeSync(fd, Buffer.from('at-1MiB'), 0, 7, 1 << 20);
writeSync(fd, Buffer.from('end'), 0, 3, sparseSize - 3);
closeSync(fd);
const long = 'd/'.repeat(60) + 'file-with-a-long-name';
mkdirSync(join(src, 'd/'.repeat(60)), { recursive: true });
writeFileSync(join(src, long), 'long\n');
symlinkSync('x'.repeat(150), join(src, 'longlink'));
utimesSync(join(src, 'sparse'), 1700000000, 1700000000);

for (const [format, extra] of [
  ['gnu', []],
  ['posix', ['--sparse-version=0.0']],
  ['posix', ['--sparse-version=0.1']],
  ['posix', ['--sparse-version=1.0']],
] as const) {
  test(`GNU tar --format=${format} ${extra.join(' ')}: sparse file, long names, long link`, async () => {
    const tar = execFileSync('tar', ['-C', src, `--format=${format}`, '--sparse', ...extra, '-cf', '-', 'sparse', long, 'longlink'], { maxBuffer: 1 << 26 });
    const entries = await read(tar);
    const sparse = entries.find((e) => e.h.name === 'sparse')!;
    assert.ok(sparse, entries.map((e) => e.h.name).join(','));
    assert.equal(sparse.h.typeflag, T.reg);
    assert.equal(sparse.h.size, sparseSize);
    assert.ok(sparse.h.sparse && sparse.h.sparse.length >= 2, 'the map is read');
    assert.equal(sparse.data.subarray(1 << 20, (1 << 20) + 7).toString(), 'at-1MiB');
    assert.equal(sparse.data.subarray(sparseSize - 3).toString(), 'end');
    assert.equal(sparse.h.mtime, 1700000000n * 1_000_000_000n);
    assert.equal(entries.find((e) => e.h.name === long)?.data.toString(), 'long\n');
    assert.equal(entries.find((e) => e.h.name === 'longlink')?.h.linkname, 'x'.repeat(150));
  });
}

test('PAX records stay bytes; GNU long names; base-256 numbers; nanosecond times', async () => {
  const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0xfe, 0x80, 0x00]);
  const tar = Buffer.concat([
    tarFile({ name: 'cap', xattrs: { 'security.capability': cap }, mtime: 1_600_000_000_123_456_789n, atime: 1_600_000_001_000_000_001n }, Buffer.from('x')),
    tarFile({ name: 'g/'.repeat(70) + 'gnu', gnuLongNames: true }, Buffer.from('g')),
    tarHeader({ name: 'big', uid: 0o7777777 + 5, gid: 3_000_000_000, base256: true, typeflag: T.dir }),
    tarHeader({ name: 'ünïcode', typeflag: T.symlink, linkname: 'ta̋rget' }),
    tarEnd(),
  ]);
  const [c, g, b, u] = await read(tar);
  assert.deepEqual(c.h.xattrs.get('security.capability'), cap);
  assert.equal(c.h.mtime, 1_600_000_000_123_456_789n);
  assert.equal(c.h.atime, 1_600_000_001_000_000_001n);
  assert.equal(g.h.name, 'g/'.repeat(70) + 'gnu');
  assert.equal(g.data.toString(), 'g');
  assert.equal(b.h.uid, 0o7777777 + 5);
  assert.equal(b.h.gid, 3_000_000_000);
  assert.equal(u.h.name, 'ünïcode');
  assert.equal(u.h.linkname, 'ta̋rget');
});

test('a bad checksum, a truncated archive and one zero block before data are errors', async () => {
  const good = tarFile({ name: 'f' }, Buffer.from('data'));
  const bad = Buffer.from(good);
  bad[0] ^= 1;
  await assert.rejects(read(Buffer.concat([bad, tarEnd()])), /invalid tar header/);
  await assert.rejects(read(good.subarray(0, 600)), /unexpected EOF/);
  await assert.rejects(read(Buffer.concat([Buffer.alloc(512), good])), /invalid tar header/);
  assert.equal((await read(Buffer.concat([good, tarEnd()]))).length, 1);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
