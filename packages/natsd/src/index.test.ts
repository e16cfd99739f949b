import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNatsServer } from './index.js';

const goMaxProcs = (pid: number): string | undefined =>
  readFileSync(`/proc/${pid}/environ`, 'utf8')
    .split('\0')
    .find((v) => v.startsWith('GOMAXPROCS='))
    ?.slice('GOMAXPROCS='.length);

// the stack's own nats-server runs on one Go thread unless the config says otherwise
test('maxProcs reaches nats-server as GOMAXPROCS; without it, the environment decides', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-natsd-'));
  const saved = process.env.GOMAXPROCS;
  delete process.env.GOMAXPROCS;
  try {
    const one = await startNatsServer({ dir: join(dir, 'a'), port: 0, maxProcs: 1 });
    const all = await startNatsServer({ dir: join(dir, 'b'), port: 0 });
    try {
      assert.equal(goMaxProcs(one.process.pid!), '1');
      assert.equal(goMaxProcs(all.process.pid!), undefined);
    } finally {
      await one.stop();
      await all.stop();
    }
  } finally {
    if (saved !== undefined) process.env.GOMAXPROCS = saved;
    rmSync(dir, { recursive: true, force: true });
  }
});
