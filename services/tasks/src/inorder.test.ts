import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InOrder } from './inorder.js';

const later = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

test('calls run one after another in the order they came, a slow one holding back those behind it', async () => {
  const q = new InOrder();
  const done: number[] = [];
  await Promise.all([30, 0, 10].map((ms, i) => q.run(async () => void (await later(ms), done.push(i)))));
  assert.deepEqual(done, [0, 1, 2]);
});

test('after a failure the calls queued behind it fail too, unrun; once the queue is empty calls run again', async () => {
  const q = new InOrder();
  const ran: number[] = [];
  const results = await Promise.allSettled([
    q.run(async () => void ran.push(0)),
    q.run(async () => {
      await later(10);
      throw new Error('disk full');
    }),
    q.run(async () => void ran.push(2)),
    q.run(async () => void ran.push(3)),
  ]);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'rejected', 'rejected']);
  assert.match(String((results[2] as PromiseRejectedResult).reason.message), /sent before this one was not committed/);
  assert.deepEqual(ran, [0]);
  await q.run(async () => void ran.push(4));
  assert.deepEqual(ran, [0, 4]);
});
