// Interop with Go's ttrpc both ways through Debian's stock containerd-shim-runc-v2: our client
// drives its Task service through a container's whole life, and our server is the events
// endpoint (TTRPC_ADDRESS) its Go client forwards /tasks/* events to.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fromAny, service } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import { TtrpcClient, TtrpcServer, serveService, serviceClient, type ServerContext, type TypedClient } from './index.js';
import { alive, killShim, openShimLog, shimAvailable, shimSocket, startShim } from './stockshim.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const available = shimAvailable && existsSync('/usr/sbin/runc') && existsSync('/bin/busybox');

describe('against the stock containerd-shim-runc-v2', { skip: !available && 'needs root, runc, busybox and containerd-shim-runc-v2', timeout: 60_000 }, () => {
  const ns = `berth-ttrpc-${process.pid}`;
  const id = `c${Date.now().toString(36)}`;
  let dir: string;
  let bundle: string;
  let address: string;
  let events: TtrpcServer;
  const forwarded: { topic: string; namespace: string; ctx: ServerContext; event: any }[] = [];
  let shimLog = '';
  let logSock: net.Socket | undefined;
  let client: TtrpcClient | undefined;
  let task: TypedClient;
  let shimPid = 0;

  before(async () => {
    dir = mkdtempSync('/tmp/berth-ttrpc-shim-');
    bundle = join(dir, 'bundle');
    address = join(dir, 'containerd.sock');
    const rootfs = join(bundle, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    copyFileSync('/bin/busybox', join(rootfs, 'bin', 'busybox'));
    for (const tool of ['sh', 'sleep']) symlinkSync('busybox', join(rootfs, 'bin', tool));
    execFileSync('runc', ['spec'], { cwd: bundle });
    const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
    spec.process.terminal = false;
    spec.process.args = ['/bin/sleep', '60'];
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));

    // The events endpoint the shim forwards to, as containerd serves it on TTRPC_ADDRESS.
    events = new TtrpcServer();
    serveService(events, service('containerd.services.events.ttrpc.v1.Events'), {
      Forward: (req: any, ctx) => {
        const env = req.envelope;
        forwarded.push({ topic: env.topic, namespace: env.namespace, ctx, event: fromAny(env.event) });
      },
    });
    await events.listen(`${address}.ttrpc`);

    logSock = openShimLog(bundle, (t) => (shimLog += t));

    const publish = join(dir, 'publish.sh');
    writeFileSync(publish, `#!/bin/sh\necho "$@" >> ${join(dir, 'publish.log')}\ncat >/dev/null\n`);
    chmodSync(publish, 0o755);
  });

  after(async () => {
    client?.close();
    if (shimPid && alive(shimPid)) process.kill(shimPid, 'SIGKILL');
    killShim({ bundle, namespace: ns, id });
    await run('runc', ['--root', `/run/containerd/runc/${ns}`, 'delete', '-f', id]).catch(() => {});
    rmSync(`/run/containerd/runc/${ns}`, { recursive: true, force: true });
    rmSync(shimSocket(address, ns, id), { force: true });
    logSock?.destroy();
    await events?.close({ timeoutMs: 500 });
    if (process.env.TTRPC_SHIM_LOG) console.log(shimLog);
    rmSync(dir, { recursive: true, force: true });
  });

  test('start prints the socket at containerd\'s address scheme; Connect answers', async () => {
    const stdout = await startShim({ bundle, namespace: ns, id, address, publishBinary: join(dir, 'publish.sh') });
    const sock = shimSocket(address, ns, id);
    assert.equal(stdout.trim(), `unix://${sock}`);
    assert.equal(readFileSync(join(bundle, 'address'), 'utf8').trim(), `unix://${sock}`);
    client = await TtrpcClient.connect(sock, { timeoutMs: 5000 });
    task = serviceClient(client, service('containerd.task.v2.Task'));
    const c = await task.Connect!({ id });
    shimPid = c.shim_pid;
    assert.ok(shimPid > 0 && alive(shimPid));
    assert.equal(c.task_pid, 0);
  });

  test('a Go server\'s NotFound status arrives as NotFound', async () => {
    await assert.rejects(task.State!({ id: 'no-such' }), (e: any) => e instanceof BerthError && e.code === Code.NotFound && /container not created/.test(e.message));
  });

  let pid = 0;
  test('Create, Start, State (running), Pids', async () => {
    const md = { metadata: { 'containerd-namespace-ttrpc': ns }, timeoutMs: 10_000 };
    const created = await task.Create!({ id, bundle, terminal: false, stdin: '', stdout: '', stderr: '', rootfs: [] }, md);
    pid = created.pid;
    assert.ok(pid > 0);
    assert.equal((await task.Start!({ id }, md)).pid, pid);
    const st = await task.State!({ id }, md);
    assert.equal(st.status, 'RUNNING');
    assert.equal(st.pid, pid);
    assert.equal(st.bundle, bundle);
    const pids = await task.Pids!({ id }, md);
    assert.deepEqual(pids.processes.map((p: any) => p.pid), [pid]);
    assert.equal(alive(pid), true);
  });

  test('Wait with a short timeout gives up alone; the connection keeps serving', async () => {
    await assert.rejects(task.Wait!({ id }, { timeoutMs: 100 }), (e: any) => e.code === Code.DeadlineExceeded);
    assert.equal((await task.State!({ id })).status, 'RUNNING');
  });

  test('Kill, Wait (137), State (stopped), Delete', async () => {
    const waiting = task.Wait!({ id });
    await task.Kill!({ id, signal: 9, all: false });
    const w = await waiting;
    assert.equal(w.exit_status, 137);
    assert.ok(w.exited_at);
    assert.equal((await task.State!({ id })).status, 'STOPPED');
    const d = await task.Delete!({ id });
    assert.equal(d.exit_status, 137);
    assert.equal(d.pid, pid);
    assert.equal(alive(pid), false);
    await assert.rejects(task.State!({ id }), (e: any) => e.code === Code.NotFound);
  });

  test('the shim\'s Go ttrpc client forwarded its events to our server, with namespace metadata and a deadline', async () => {
    for (let i = 0; i < 50 && !forwarded.some((f) => f.topic === '/tasks/delete'); i++) await sleep(50);
    const topics = forwarded.map((f) => f.topic);
    for (const t of ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']) assert.ok(topics.includes(t), `${t} in ${topics.join(' ')}`);
    for (const f of forwarded) {
      assert.equal(f.namespace, ns);
      assert.deepEqual(f.ctx.metadata['containerd-namespace-ttrpc'], [ns]);
      assert.ok(f.ctx.deadline! > Date.now() - 60_000 && f.ctx.deadline! <= Date.now() + 5_000, 'Go sent its 5 s Forward timeout');
    }
    const exit = forwarded.find((f) => f.topic === '/tasks/exit')!;
    assert.equal(exit.event.container_id, id);
    assert.equal(exit.event.exit_status, 137);
    assert.equal(exit.event.pid, pid);
  });

  test('Shutdown ends the shim, its socket and our connection', async () => {
    await task.Shutdown!({ id, now: false }).catch((e) => {
      // the shim may exit before its answer is written; the connection then just closes
      assert.equal(e.code, Code.Unavailable);
    });
    await client!.closed;
    for (let i = 0; i < 100 && alive(shimPid); i++) await sleep(50);
    assert.equal(alive(shimPid), false);
    assert.equal(existsSync(shimSocket(address, ns, id)), false);
  });
});

