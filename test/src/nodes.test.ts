// Many nodes on one NATS: two stacks join an existing nats-server (--nats-url) with different
// node ids. Each serves its own node: its own namespaces, its own plugins, and one node's
// outage does not touch the other.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { ctr, startStack, until, type Stack } from './harness.js';

describe('two nodes on one NATS cluster', () => {
  let natsDir: string;
  let natsd: NatsServer;
  let a: Stack;
  let b: Stack;

  before(async () => {
    natsDir = mkdtempSync(join(tmpdir(), 'berth-nodes-'));
    natsd = await startNatsServer({ dir: natsDir });
    [a, b] = await Promise.all([startStack({ natsUrl: natsd.url, node: 'node-a' }), startStack({ natsUrl: natsd.url, node: 'node.b' })]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await natsd?.stop();
    rmSync(natsDir, { recursive: true, force: true });
  });

  test('each node keeps its own namespaces', async () => {
    assert.equal((await ctr(a.sock, 'namespaces', 'create', 'only-on-a')).code, 0);
    assert.match((await ctr(a.sock, 'namespaces', 'ls', '-q')).stdout, /only-on-a/);
    assert.doesNotMatch((await ctr(b.sock, 'namespaces', 'ls', '-q')).stdout, /only-on-a/);
  });

  test("one node's outage leaves the other serving", async () => {
    process.kill(a.pid('namespaces'), 'SIGKILL');
    const rb = await ctr(b.sock, 'namespaces', 'ls');
    assert.equal(rb.code, 0, rb.stderr);
    await until(async () => (await ctr(a.sock, 'namespaces', 'ls')).code === 0, 5000, 'node a back');
  });
});
