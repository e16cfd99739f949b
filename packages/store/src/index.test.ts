import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { openStore } from './index.js';

test('rocksdb store: put/get/del, batches, prefix scans, reopen', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-store-'));
  try {
    let s = await openStore(dir);
    assert.equal(await s.get('nope'), undefined);
    await s.put('ns/a', { labels: { x: '1' } });
    await s.batch([
      { type: 'put', key: 'ns/b', value: { labels: {} } },
      { type: 'put', key: 'nt/c', value: 3 },
      { type: 'del', key: 'ns/a' },
    ]);
    const seen: string[] = [];
    for await (const [k] of s.entries('ns/')) seen.push(k);
    assert.deepEqual(seen, ['ns/b']);
    assert.equal(await s.hasPrefix('nt/'), true);
    assert.equal(await s.hasPrefix('nu/'), false);
    await s.close();
    s = await openStore(dir);
    assert.equal(await s.get('nt/c'), 3);
    await s.del('nt/c');
    assert.equal(await s.get('nt/c'), undefined);
    await s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rocksdb store: committed batches are let go (the heap after 5,000 commits is where it was)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-store-'));
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const heap = () => {
    gc();
    gc();
    return process.memoryUsage().heapUsed;
  };
  const s = await openStore(dir);
  try {
    const commit = (i: number) => s.batch([{ type: 'put', key: `ev/${i}`, value: { n: i } }, { type: 'del', key: `ev/${i - 1}` }]);
    for (let i = 0; i < 500; i++) await commit(i);
    const before = heap();
    for (let i = 500; i < 5500; i++) await commit(i);
    const grown = heap() - before;
    // a batch kept per commit is ~500 bytes of heap: 2.5 MB here
    assert.ok(grown < 1 << 20, `heap grew by ${(grown / 2 ** 20).toFixed(2)} MB over 5,000 commits`);
    assert.deepEqual(await s.get('ev/5499'), { n: 5499 });
    assert.equal(await s.get('ev/5498'), undefined);
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
