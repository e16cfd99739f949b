// The tasks service's own logic without shims: a forwarded event is committed once however
// often a shim retries it, an init exit once whoever reports it first; runtime names map to
// shims as configured and as containerd names shim binaries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toAny } from '@berth/api';
import type { Outbox } from '@berth/bus';
import { Code } from '@berth/errdefs';
import { openStore } from '@berth/store';
import { Bundles } from './bundle.js';
import { Tasks } from './local.js';
import { chooseRuntime, shimBinaryName } from './runtimes.js';

function fakeOutbox() {
  const out: string[] = [];
  const outbox = {
    forward: (tx: any, env: any) => tx.afterCommit(() => out.push(`${env.namespace} ${env.topic}`)),
    emit: (tx: any, ns: string, topic: string) => tx.afterCommit(() => out.push(`${ns} ${topic}`)),
  };
  return { out, outbox: outbox as unknown as Outbox };
}

test('a retried forward is committed once; an init exit once per pid', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-tasks-unit-'));
  const store = await openStore(join(dir, 'db'));
  try {
    const { out, outbox } = fakeOutbox();
    const tasks = new Tasks({
      store,
      outbox,
      bundles: new Bundles(join(dir, 'state'), join(dir, 'work')),
      runtimes: {},
      shimEnv: { address: '', ttrpcAddress: '' },
      peers: { container: async () => ({}) as never, mounts: async () => [] },
      log: () => {},
    });
    const at = { seconds: 100, nanos: 5 };
    const start = { container_id: 'c1', pid: 42 };
    const env = (topic: string, e: Record<string, unknown>, t = at) => ({ timestamp: t, namespace: 'ns', topic, event: toAny(`containerd.events.${topic === '/tasks/start' ? 'TaskStart' : 'TaskExit'}`, e) });
    await Promise.all([tasks.forwarded(env('/tasks/start', start), start), tasks.forwarded(env('/tasks/start', start), start)]);
    await tasks.forwarded(env('/tasks/start', start), start);
    const exit = { container_id: 'c1', id: 'c1', pid: 42, exit_status: 3 };
    await tasks.forwarded(env('/tasks/exit', exit), exit);
    // the same exit, stamped later (as a restarted service that found it would)
    await tasks.forwarded(env('/tasks/exit', exit, { seconds: 101, nanos: 0 }), exit);
    // an exec's exit is not the init's
    const execExit = { container_id: 'c1', id: 'e1', pid: 43, exit_status: 0 };
    await tasks.forwarded(env('/tasks/exit', execExit), execExit);
    assert.deepEqual(out, ['ns /tasks/start', 'ns /tasks/exit', 'ns /tasks/exit']);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('runtime names: configured shims, containerd binary names, containerd errors', () => {
  assert.equal(shimBinaryName('io.containerd.runc.v2'), 'containerd-shim-runc-v2');
  assert.equal(shimBinaryName('io.containerd.kata.v2'), 'containerd-shim-kata-v2');
  const runtimes = { 'io.containerd.runc.v2': 'berth', 'io.containerd.runtime.v1.linux': 'stock' };
  assert.deepEqual(chooseRuntime('io.containerd.runc.v2', runtimes, true), { kind: 'berth', binary: '' });
  // no shim host built: the stock shim runs it
  assert.equal(chooseRuntime('io.containerd.runc.v2', runtimes, false).kind, 'stock');
  assert.match(chooseRuntime('io.containerd.runtime.v1.linux', runtimes, true).binary, /containerd-shim-runc-v2$/);
  assert.throws(() => chooseRuntime('io.containerd.nope.v9', runtimes, true), (e: any) => e.code === Code.NotFound && /binary not installed "containerd-shim-nope-v9"/.test(e.message));
  assert.throws(() => chooseRuntime('runc', runtimes, true), (e: any) => e.code === Code.InvalidArgument && /invalid runtime name runc/.test(e.message));
  assert.throws(() => chooseRuntime('', runtimes, true), (e: any) => e.code === Code.InvalidArgument);
});
