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

test("a container is looked up once, and again after the containers service reports a delete (or may have missed telling one)", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-tasks-unit-'));
  const store = await openStore(join(dir, 'db'));
  try {
    let lookups = 0;
    let exists = true;
    let hold: Promise<void> | undefined;
    const tasks = new Tasks({
      store,
      outbox: fakeOutbox().outbox,
      bundles: new Bundles(join(dir, 'state'), join(dir, 'work')),
      runtimes: {},
      shimEnv: { address: '', ttrpcAddress: '' },
      peers: {
        container: async (ns, id) => {
          lookups++;
          await hold;
          if (!exists) throw Object.assign(new Error(`container "${id}" in namespace "${ns}": not found`), { code: Code.NotFound });
          return {} as never;
        },
        mounts: async () => [],
      },
      log: () => {},
    });
    const get = () => tasks.getProcess('ns', 'c1', '').then(() => 'ok', (e: Error) => e.message);
    // no task: the container is found, then the task is not
    assert.equal(await get(), 'task c1 not found');
    assert.equal(await get(), 'task c1 not found');
    assert.equal(await tasks.kill('ns', 'c1', '', 9, false).catch((e: Error) => e.message), 'task c1 not found');
    assert.equal(lookups, 1, 'known after the first lookup');
    // deleted: the next call asks, and the container's NotFound is the answer
    exists = false;
    tasks.containerDeleted('ns', 'c1');
    assert.equal(await get(), 'container "c1" in namespace "ns": not found');
    assert.equal(await get(), 'container "c1" in namespace "ns": not found');
    assert.equal(lookups, 3);
    // a lookup that overlaps a delete does not make the container known
    exists = true;
    let release!: () => void;
    hold = new Promise((r) => (release = r));
    const overlapping = get();
    tasks.containerDeleted('ns', 'other');
    release();
    hold = undefined;
    assert.equal(await overlapping, 'task c1 not found');
    assert.equal(await get(), 'task c1 not found');
    assert.equal(lookups, 5);
    assert.equal(await get(), 'task c1 not found');
    assert.equal(lookups, 5);
    // a delete that may have gone unheard (NATS cut off, containers restarted): all asked again
    tasks.containersUnknown();
    assert.equal(await get(), 'task c1 not found');
    assert.equal(lookups, 6);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
