// Many nodes on one NATS: two stacks join an existing nats-server (--nats-url) with different
// node ids, each with its own users and credentials (as an operator sets them up: README).
// Each serves its own node: its own namespaces, its own plugins, and one node's outage does not
// touch the other.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stackUsers, startNatsServer, type NatsServer } from '@berth/natsd';
import { defaultConfig } from '@berth/kit';
import { token } from '@berth/bus';
import { ctr, startStack, until, type Stack } from './harness.js';

describe('two nodes on one NATS cluster', () => {
  let natsDir: string;
  let natsd: NatsServer;
  let a: Stack;
  let b: Stack;

  before(async () => {
    natsDir = mkdtempSync(join(tmpdir(), 'berth-nodes-'));
    // per node: a user for each of its processes, with that node's permissions, credentials in a folder
    const configFor = (node: string) => {
      const creds = join(natsDir, node, 'creds');
      const users = stackUsers(creds, defaultConfig().services, token(node), node);
      const file = join(natsDir, node, 'config.toml');
      writeFileSync(file, `[nats]\ncredentials_dir = ${JSON.stringify(creds)}\n`);
      return { users, file };
    };
    const [ca, cb] = [configFor('node-a'), configFor('node.b')];
    natsd = await startNatsServer({ dir: natsDir, users: [...ca.users, ...cb.users] });
    [a, b] = await Promise.all([startStack({ natsUrl: natsd.url, node: 'node-a', config: ca.file }), startStack({ natsUrl: natsd.url, node: 'node.b', config: cb.file })]);
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
