import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { RecordFile } from './record.js';

const read = (p: string) => JSON.parse(readFileSync(p, 'utf8'));

test('record file: rewritten in place (one inode), a shorter record padded, the last one read back', () => {
  const dir = mkdtempSync('/tmp/berth-record-');
  try {
    const p = join(dir, 'r.json');
    const r = new RecordFile(p);
    r.write({ status: 'created', execs: ['a', 'b', 'c'] });
    const ino = statSync(p).ino;
    r.write({ status: 'running' });
    assert.deepEqual(read(p), { status: 'running' });
    assert.equal(statSync(p).ino, ino, 'the same file, not a renamed copy');
    r.close();
    // a new writer (a restarted host) takes the file as it is
    const again = new RecordFile(p);
    again.write({ status: 'stopped', exit: 3 });
    assert.deepEqual(read(p), { status: 'stopped', exit: 3 });
    assert.equal(statSync(p).ino, ino);
    again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('record file: a record larger than a page is written whole by a rename, and in place again once it fits', () => {
  const dir = mkdtempSync('/tmp/berth-record-');
  try {
    const p = join(dir, 'r.json');
    const r = new RecordFile(p);
    r.write({ small: true });
    const big = { execs: Array.from({ length: 400 }, (_, i) => `exec-${i}`) };
    r.write(big);
    assert.deepEqual(read(p), big);
    assert.ok(statSync(p).size > 4096);
    r.write({ small: 2 });
    assert.deepEqual(read(p), { small: 2 });
    r.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
