// The collector's timing rules that differ from containerd's: a skipped first collection is
// retried soon (the collector starts before the services it asks), later ones after containerd's
// gap plus a second.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type Collected, type SchedulerConfig } from './scheduler.js';

const cfg = (): SchedulerConfig => ({ pauseThreshold: 0.02, deletionThreshold: 0, mutationThreshold: 100, scheduleDelay: 0, startupDelay: 10, interval: 0 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a first collection skipped because services are not up yet is retried soon, until one runs', async () => {
  const attempts: number[] = [];
  const t0 = Date.now();
  const s = new Scheduler<Collected>(cfg(), async () => {
    attempts.push(Date.now() - t0);
    if (attempts.length <= 3) throw new Error('collection skipped, not every service answered');
    return { durationMs: 5 };
  }).start();
  try {
    for (let i = 0; i < 100 && attempts.length < 4; i++) await sleep(20);
    assert.equal(attempts.length, 4, `attempts at ${attempts.join(', ')} ms`);
    // 10 ms start-up delay, then 100, 200 and 400 ms apart: the first runs within a second
    assert.ok(attempts[3]! < 1500, `the first collection ran at ${attempts[3]} ms`);
    await sleep(300);
    assert.equal(attempts.length, 4, 'nothing more: no deletion since');
  } finally {
    s.stop();
  }
});

test('once a collection has run, a skipped one is retried after the tick interval plus a second', async () => {
  const attempts: number[] = [];
  let fail = false;
  const s = new Scheduler<Collected>(cfg(), async () => {
    attempts.push(Date.now());
    if (fail) throw new Error('collection skipped');
    return { durationMs: 1 };
  }).start();
  try {
    for (let i = 0; i < 50 && attempts.length < 1; i++) await sleep(20);
    fail = true;
    s.mutated(1, 1);
    for (let i = 0; i < 50 && attempts.length < 2; i++) await sleep(20);
    assert.equal(attempts.length, 2, 'the deletion collected (and was skipped)');
    await sleep(600);
    assert.equal(attempts.length, 2, 'no retry within the gap');
  } finally {
    s.stop();
  }
});
