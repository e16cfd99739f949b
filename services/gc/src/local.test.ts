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
      // content says some blob file may have lost its name: it is asked to sweep with nothing unreferenced
      if (method === gcEnterMethod) return { records: {}, untidy: service === 'content' };
      if (method === gcSweepMethod) {
        await sweeping;
        return { removed: {}, bytes: 0 };
      }
      return {};
    },
    { services: ['images', 'containers', 'leases', 'content', 'snapshot'], ttl: 10_000 },
  );
  const collected = c.collect();
  // content sweeps (its files); nothing else has anything to sweep here
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

test('a sweep is asked only of a service with something unreferenced or untidy; the figures name who swept', async () => {
  const run = async (untidy: boolean, records: object) => {
    const calls: string[] = [];
    const c = new Collector(
      async (service, method) => {
        calls.push(`${method} ${service}`);
        if (method === gcEnterMethod) return service === 'content' ? { records, untidy } : { records: {} };
        if (method === gcSweepMethod) return { removed: {}, bytes: 0 };
        return {};
      },
      { services: ['images', 'containers', 'leases', 'content', 'snapshot'], ttl: 10_000 },
    );
    const stats = await c.collect();
    return { sweeps: calls.filter((x) => x.startsWith(gcSweepMethod)), swept: stats.swept };
  };
  assert.deepEqual(await run(false, {}), { sweeps: [], swept: [] }, 'nothing to do: no sweep at all');
  assert.deepEqual(await run(true, {}), { sweeps: [`${gcSweepMethod} content`], swept: ['content'] }, 'untidy files: content sweeps');
  const unreferenced = { content: [{ ns: 'n', digest: 'sha256:aa', size: 1, labels: {} }] };
  assert.deepEqual(await run(false, unreferenced), { sweeps: [`${gcSweepMethod} content`], swept: ['content'] }, 'a record to remove: content sweeps');
});
