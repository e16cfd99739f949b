import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { IdleTrim, releaseFreeMemory } from './memory.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('releaseFreeMemory gives freed heap pages back: RSS falls', async () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  // 4 KiB backing stores: below glibc's mmap threshold, so they live in the arena, not in mappings of their own
  let held: Buffer[] = [];
  for (let i = 0; i < 40_000; i++) held.push(Buffer.allocUnsafeSlow(4096).fill(1));
  held = [];
  gc();
  gc();
  await sleep(200); // backing stores are swept off the main thread
  const before = process.memoryUsage().rss;
  assert.equal(releaseFreeMemory(), true, 'something was released');
  const after = process.memoryUsage().rss;
  assert.ok(before - after > 32 << 20, `RSS ${before >> 20} -> ${after >> 20} MiB`);
});

test('IdleTrim releases once the work has been quiet for its time, not while any runs', async () => {
  let trims = 0;
  const t = new IdleTrim(50, () => trims++);
  const a = t.begin();
  const b = t.begin();
  a();
  a(); // a second end of the same piece counts once
  await sleep(100);
  assert.equal(trims, 0, 'b still runs');
  b();
  await sleep(20);
  assert.equal(trims, 0, 'not quiet long enough yet');
  const c = t.begin(); // work again before the quiet time: no trim for the earlier end
  await sleep(100);
  assert.equal(trims, 0);
  c();
  await sleep(100);
  assert.equal(trims, 1, 'one trim after the quiet time');
  t.begin()();
  t.stop();
  await sleep(100);
  assert.equal(trims, 1, 'none after stop');
});

test('IdleTrim.during ends its piece of work also when the work fails', async () => {
  let trims = 0;
  const t = new IdleTrim(20, () => trims++);
  await assert.rejects(t.during(async () => Promise.reject(new Error('layer broken'))), /layer broken/);
  assert.equal(await t.during(async () => 7), 7);
  await sleep(60);
  assert.equal(trims, 1);
});
