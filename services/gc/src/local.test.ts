import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gcEnterMethod, gcReleaseMethod, gcSweepMethod } from '@berth/bus';
import { Collector } from './local.js';

test('a service with nothing to sweep is released once the mark is done, before the sweeps end; the swept ones after their sweep', async () => {
  const calls: string[] = [];
  let finishSweep!: () => void;
  const sweeping = new Promise<void>((r) => (finishSweep = r));
  const c = new Collector(
    async (service, method) => {
      calls.push(`${method} ${service}`);
      if (method === gcEnterMethod) return { records: {} };
      if (method === gcSweepMethod) {
        await sweeping;
        return { removed: {}, bytes: 0 };
      }
      return {};
    },
    { services: ['images', 'containers', 'leases', 'content', 'snapshot'], ttl: 10_000 },
  );
  const collected = c.collect();
  // content is always swept (its young files); nothing else has anything to sweep here
  for (let i = 0; i < 50 && calls.filter((x) => x.startsWith(gcReleaseMethod)).length < 4; i++) await new Promise((r) => setImmediate(r));
  const released = calls.filter((x) => x.startsWith(gcReleaseMethod)).sort();
  assert.deepEqual(released, ['GcRelease containers', 'GcRelease images', 'GcRelease leases', 'GcRelease snapshot'], 'let go while content still sweeps');
  assert.ok(calls.includes(`${gcSweepMethod} content`));
  assert.ok(!calls.includes(`${gcReleaseMethod} content`));
  finishSweep();
  await collected;
  assert.equal(calls.filter((x) => x === `${gcReleaseMethod} content`).length, 1, 'content released after its sweep');
  assert.equal(calls.filter((x) => x.startsWith(gcReleaseMethod)).length, 5, 'each released once');
});
