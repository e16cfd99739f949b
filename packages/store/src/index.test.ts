import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
