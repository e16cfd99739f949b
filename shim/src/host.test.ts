// The shim host driven directly, as the tasks service drives it: Host.Start over its control
// socket, then containerd's Task API on each container's socket, with real runc and busybox.
// The host runs as its own process (started like the tasks service starts it), so it is the
// subreaper of the containers and can be killed with -9.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { constants as C, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { codec, fromAny, service } from '@berth/api';
import { Code } from '@berth/errdefs';
import { TtrpcClient, serviceClient, type TypedClient } from '@berth/ttrpc';
import { EventsEndpoint, MAIN, alive, holdFifo, available, makeBundle, mkfifo, readFifo, rootMount, sleep, startHost, task, taskClient } from './testkit.js';

describe('shim host', { skip: !available && 'needs root, runc and busybox', timeout: 180_000 }, () => {
  const ns = `berth-shim-${process.pid}`;
  let dir: string;
  let state: string;
  let address: string;
  let events: EventsEndpoint;
  let hostPid = 0;
  let hostClient: TtrpcClient;
  let host: TypedClient;
  const clients: TtrpcClient[] = [];
  const md = () => ({ timeoutMs: 20_000, metadata: { 'containerd-namespace-ttrpc': ns } });

  async function serve(id: string, bundle: string): Promise<TypedClient> {
    const res = await host.Start!({ id, namespace: ns, bundle, address, ttrpc_address: events.path });
    const c = await taskClient(res.address);
    clients.push(c);
    return task(c);
  }

  before(async () => {
    dir = mkdtempSync('/tmp/berth-shim-test-');
    state = join(dir, 'state');
    address = join(dir, 'berth.sock');
    events = new EventsEndpoint(join(dir, 'events.sock'));
    await events.up();
    const h = await startHost(state, address, events.path);
    hostPid = h.proc.pid!;
    hostClient = h.client;
    host = h.host;
  });

  after(async () => {
    for (const c of clients) c.close();
    hostClient?.close();
    // the containers first (the host may be gone), then the host
    const runcRoot = join(state, 'runc', ns);
    if (existsSync(runcRoot)) for (const id of readdirSync(runcRoot)) spawnSync('runc', ['--root', runcRoot, 'delete', '--force', id]);
    rmSync(runcRoot, { recursive: true, force: true });
    for (const p of [hostPid, ...extraHosts]) if (p && alive(p)) process.kill(p, 'SIGKILL');
    for (const b of existsSync(join(dir, 'bundles')) ? readdirSync(join(dir, 'bundles')) : []) spawnSync('umount', ['-R', join(dir, 'bundles', b, 'rootfs')]);
    for (const ctl of readdirSync('/sys/fs/cgroup')) {
      try {
        rmdirSync(join('/sys/fs/cgroup', ctl, 'berth-shim-test'));
      } catch {}
    }
    await events.down();
    if (process.env.SHIM_TEST_LOG) console.log(readFileSync(join(state, 'host.log'), 'utf8'));
    rmSync(dir, { recursive: true, force: true });
  });
  const extraHosts: number[] = [];

  test('Host.Start serves a container at containerd\'s socket scheme and writes <bundle>/address', async () => {
    const bundle = makeBundle(dir, 'c-addr', { args: ['/bin/true'] });
    const res = await host.Start!({ id: 'c-addr', namespace: ns, bundle, address, ttrpc_address: events.path });
    assert.match(res.address, new RegExp(`^unix://${state}/s/[0-9a-f]{64}$`));
    assert.equal(res.pid, hostPid);
    assert.equal(readFileSync(join(bundle, 'address'), 'utf8'), res.address);
    const c = await taskClient(res.address);
    clients.push(c);
    const t = task(c);
    const conn = await t.Connect!({ id: 'c-addr' });
    assert.equal(conn.shim_pid, hostPid);
    assert.equal(conn.task_pid, 0);
    await assert.rejects(t.State!({ id: 'c-addr' }), (e: any) => e.code === Code.NotFound);
    // the same Start again (a retry) answers the same address
    assert.equal((await host.Start!({ id: 'c-addr', namespace: ns, bundle, address, ttrpc_address: events.path })).address, res.address);
    const info = await host.Info!({});
    assert.ok(info.containers.includes(`${ns}/c-addr`));
    await t.Shutdown!({ id: 'c-addr' });
    await sleep(100);
    assert.ok(!(await host.Info!({})).containers.includes(`${ns}/c-addr`));
  });

  test('a container\'s life: Create, Start, State, Pids, Exec with FIFOs, exit codes, Kill, Wait, Delete; events in order', async () => {
    const id = 'c-life';
    const bundle = makeBundle(dir, id, { args: ['/bin/sleep', '600'] });
    const t = await serve(id, bundle);
    const created = await t.Create!({ id, bundle, rootfs: rootMount(dir), terminal: false, stdin: '', stdout: '', stderr: '' }, md());
    const pid = created.pid;
    assert.ok(pid > 0 && alive(pid));
    assert.equal((await t.State!({ id }, md())).status, 'CREATED');
    assert.ok(existsSync(join(bundle, 'rootfs', 'bin', 'busybox')), 'rootfs mounted from the Create mounts');
    assert.equal((await t.Start!({ id }, md())).pid, pid);
    const st = await t.State!({ id }, md());
    assert.equal(st.status, 'RUNNING');
    assert.equal(st.pid, pid);
    assert.equal(st.bundle, bundle);

    // an exec whose stdout and stderr are FIFOs, exiting 3
    const out = mkfifo(join(dir, 'fifo', 'e1-out'));
    const err = mkfifo(join(dir, 'fifo', 'e1-err'));
    const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')).process;
    const execSpec = (args: string[]) => ({ type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify({ ...spec, args })) });
    await t.Exec!({ id, exec_id: 'e1', terminal: false, stdin: '', stdout: out, stderr: err, spec: execSpec(['/bin/sh', '-c', 'echo to-out; echo to-err >&2; exit 3']) }, md());
    await assert.rejects(t.Exec!({ id, exec_id: 'e1', spec: execSpec(['/bin/true']) }, md()), (e: any) => e.code === Code.AlreadyExists);
    const outHeld = holdFifo(out);
    const errHeld = holdFifo(err);
    const waitE1 = t.Wait!({ id, exec_id: 'e1' }, md());
    const e1 = await t.Start!({ id, exec_id: 'e1' }, md());
    const outText = outHeld.read();
    const errText = errHeld.read();
    assert.ok(e1.pid > 0);
    assert.equal((await waitE1).exit_status, 3);
    assert.equal(await outText, 'to-out\n');
    assert.equal(await errText, 'to-err\n');
    const d1 = await t.Delete!({ id, exec_id: 'e1' }, md());
    assert.equal(d1.exit_status, 3);

    // a long exec shows in Pids with its exec id; killing it reports 128+15
    await t.Exec!({ id, exec_id: 'e2', spec: execSpec(['/bin/sleep', '600']) }, md());
    const e2 = await t.Start!({ id, exec_id: 'e2' }, md());
    const pids = await t.Pids!({ id }, md());
    assert.deepEqual(pids.processes.map((p: any) => p.pid).sort(), [pid, e2.pid].sort());
    const e2Info = pids.processes.find((p: any) => p.pid === e2.pid);
    assert.equal(fromAny(e2Info.info).exec_id, 'e2');
    await t.Kill!({ id, exec_id: 'e2', signal: 15 }, md());
    assert.equal((await t.Wait!({ id, exec_id: 'e2' }, md())).exit_status, 143);
    await assert.rejects(t.Kill!({ id, exec_id: 'e2', signal: 15 }, md()), (e: any) => e.code === Code.NotFound);
    await t.Delete!({ id, exec_id: 'e2' }, md());

    // Stats: containerd's cgroup metrics type
    const stats = (await t.Stats!({ id }, md())).stats;
    assert.match(stats.type_url, /^io\.containerd\.cgroups\.v[12]\.Metrics$/);
    const m = fromAny(stats);
    assert.ok((m.pids?.current ?? 0) >= 1, 'a pid counted');
    assert.ok((m.memory?.usage?.usage ?? m.memory?.usage ?? 0) > 0, 'memory used');

    // Update: a pids limit set through runc update shows in Stats
    const resources = { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources', value: Buffer.from(JSON.stringify({ pids: { limit: 42 } })) };
    await t.Update!({ id, resources }, md());
    assert.equal(fromAny((await t.Stats!({ id }, md())).stats).pids.limit, 42);

    // Pause and Resume
    await t.Pause!({ id }, md());
    assert.equal((await t.State!({ id }, md())).status, 'PAUSED');
    await t.Resume!({ id }, md());
    assert.equal((await t.State!({ id }, md())).status, 'RUNNING');

    await assert.rejects(t.Delete!({ id }, md()), (e: any) => e.code === Code.FailedPrecondition);
    const waiting = t.Wait!({ id }, md());
    await t.Kill!({ id, signal: 9 }, md());
    const w = await waiting;
    assert.equal(w.exit_status, 137);
    assert.ok(w.exited_at.seconds > 0);
    assert.equal((await t.State!({ id }, md())).status, 'STOPPED');
    const d = await t.Delete!({ id }, md());
    assert.equal(d.exit_status, 137);
    assert.equal(d.pid, pid);
    assert.equal(existsSync(join(bundle, 'rootfs', 'bin')), false, 'rootfs unmounted');
    await assert.rejects(t.State!({ id }, md()), (e: any) => e.code === Code.NotFound);

    await events.waitFor(() => events.of(id).some((f) => f.topic === '/tasks/delete'));
    const seen = events.of(id).map((f) => (f.event.exec_id || f.event.id ? `${f.topic}:${f.event.exec_id || f.event.id}` : f.topic));
    assert.deepEqual(seen, [
      '/tasks/create',
      '/tasks/start',
      '/tasks/exec-added:e1',
      '/tasks/exec-started:e1',
      '/tasks/exit:e1',
      '/tasks/exec-added:e2',
      '/tasks/exec-started:e2',
      '/tasks/exit:e2',
      '/tasks/paused',
      '/tasks/resumed',
      `/tasks/exit:${id}`,
      '/tasks/delete',
    ]);
    for (const f of events.of(id)) {
      assert.equal(f.namespace, ns);
      assert.deepEqual(f.metadata, [ns]);
    }
    const exit = events.of(id).find((f) => f.topic === '/tasks/exit' && f.event.id === id)!;
    assert.equal(exit.event.exit_status, 137);
    assert.equal(exit.event.pid, pid);
    assert.equal(events.of(id)[0]!.event.pid, pid);
    await t.Shutdown!({ id });
  });

  test('stdout through a FIFO and the exit code passed through; stdin through a FIFO ends when the client closes it or at CloseIO', async () => {
    const id = 'c-exit';
    const bundle = makeBundle(dir, id, { args: ['/bin/sh', '-c', 'echo hello from busybox; exit 7'] });
    const t = await serve(id, bundle);
    const out = mkfifo(join(dir, 'fifo', `${id}-out`));
    await t.Create!({ id, bundle, rootfs: rootMount(dir), stdout: out, stderr: out }, md());
    const text = readFifo(out);
    const waiting = t.Wait!({ id }, md());
    await t.Start!({ id }, md());
    assert.equal((await waiting).exit_status, 7);
    assert.equal(await text, 'hello from busybox\n');
    assert.equal((await t.Delete!({ id }, md())).exit_status, 7);

    // stdin: EOF when the client's writer closes (`echo x | ctr run` sends no CloseIO) ...
    for (const [id2, closeIO] of [['c-stdin-eof', false], ['c-stdin-closeio', true]] as const) {
      const b2 = makeBundle(dir, id2, { args: ['/bin/cat'] });
      const t2 = await serve(id2, b2);
      const stdin = mkfifo(join(dir, 'fifo', `${id2}-in`));
      const out2 = mkfifo(join(dir, 'fifo', `${id2}-out`));
      await t2.Create!({ id: id2, bundle: b2, rootfs: rootMount(dir), stdin, stdout: out2, stderr: out2 }, md());
      const text2 = readFifo(out2);
      const waiting2 = t2.Wait!({ id: id2 }, md());
      await t2.Start!({ id: id2 }, md());
      await sleep(100);
      assert.equal((await t2.State!({ id: id2 }, md())).status, 'RUNNING', 'no EOF before the client has opened stdin');
      const w = openSync(stdin, C.O_WRONLY | C.O_NONBLOCK);
      writeSync(w, 'typed in\n');
      if (closeIO) {
        // ... and at CloseIO while the client still holds it open
        await sleep(200);
        assert.equal((await t2.State!({ id: id2 }, md())).status, 'RUNNING');
        await t2.CloseIO!({ id: id2, stdin: true }, md());
      } else {
        closeSync(w);
      }
      assert.equal((await waiting2).exit_status, 0);
      assert.equal(await text2, 'typed in\n');
      if (closeIO) closeSync(w);
      await t2.Delete!({ id: id2 }, md());
    }
  });

  test('log URIs: file:// and binary:// (ctr --log-uri)', async () => {
    const id = 'c-logfile';
    const bundle = makeBundle(dir, id, { args: ['/bin/sh', '-c', 'echo out-line; echo err-line >&2'] });
    const t = await serve(id, bundle);
    const logFile = join(dir, 'logs', 'c.log');
    await t.Create!({ id, bundle, rootfs: rootMount(dir), stdout: `file://${logFile}`, stderr: `file://${logFile}` }, md());
    const waiting = t.Wait!({ id }, md());
    await t.Start!({ id }, md());
    assert.equal((await waiting).exit_status, 0);
    assert.deepEqual(readFileSync(logFile, 'utf8').split('\n').filter(Boolean).sort(), ['err-line', 'out-line']);
    await t.Delete!({ id }, md());

    const id2 = 'c-logbin';
    const b2 = makeBundle(dir, id2, { args: ['/bin/sh', '-c', 'echo via-binary; echo err-binary >&2'] });
    const t2 = await serve(id2, b2);
    const logger = join(dir, 'logger.sh');
    writeFileSync(logger, `#!/bin/sh\nexec 5>&-\necho "$CONTAINER_NAMESPACE/$CONTAINER_ID $*" > "$2.env"\ncat <&3 > "$2.out" &\ncat <&4 > "$2.err" &\nwait\n`, { mode: 0o755 });
    const base = join(dir, 'logs', 'bin');
    await t2.Create!({ id: id2, bundle: b2, rootfs: rootMount(dir), stdout: `binary://${logger}?out=${base}`, stderr: `binary://${logger}?out=${base}` }, md());
    const waiting2 = t2.Wait!({ id: id2 }, md());
    await t2.Start!({ id: id2 }, md());
    assert.equal((await waiting2).exit_status, 0);
    for (let i = 0; i < 100 && !(existsSync(`${base}.err`) && readFileSync(`${base}.err`, 'utf8')); i++) await sleep(20);
    assert.equal(readFileSync(`${base}.out`, 'utf8'), 'via-binary\n');
    assert.equal(readFileSync(`${base}.err`, 'utf8'), 'err-binary\n');
    assert.equal(readFileSync(`${base}.env`, 'utf8').trim(), `${ns}/${id2} out ${base}`);
    await t2.Delete!({ id: id2 }, md());
  });

  test('a terminal: the pty master from runc, ResizePty, output copied to the stdout FIFO', async () => {
    const id = 'c-tty';
    const bundle = makeBundle(dir, id, { args: ['/bin/sh', '-c', 'sleep 0.5; stty size'], terminal: true });
    const t = await serve(id, bundle);
    const out = mkfifo(join(dir, 'fifo', `${id}-out`));
    const stdin = mkfifo(join(dir, 'fifo', `${id}-in`));
    await t.Create!({ id, bundle, rootfs: rootMount(dir), terminal: true, stdin, stdout: out }, md());
    const text = readFifo(out);
    const waiting = t.Wait!({ id }, md());
    await t.Start!({ id }, md());
    await t.ResizePty!({ id, width: 77, height: 33 }, md());
    assert.equal((await waiting).exit_status, 0);
    await t.Delete!({ id }, md());
    assert.equal((await text).trim(), '33 77');

    // an exec with a terminal of its own, resized by its exec id
    const id2 = 'c-tty-exec';
    const b2 = makeBundle(dir, id2, { args: ['/bin/sleep', '600'] });
    const t2 = await serve(id2, b2);
    await t2.Create!({ id: id2, bundle: b2, rootfs: rootMount(dir) }, md());
    await t2.Start!({ id: id2 }, md());
    const spec = JSON.parse(readFileSync(join(b2, 'config.json'), 'utf8')).process;
    const eout = mkfifo(join(dir, 'fifo', `${id2}-out`));
    const held = holdFifo(eout);
    await t2.Exec!({ id: id2, exec_id: 'tx', terminal: true, stdout: eout, spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify({ ...spec, terminal: true, args: ['/bin/sh', '-c', 'sleep 0.5; stty size'] })) } }, md());
    const ewait = t2.Wait!({ id: id2, exec_id: 'tx' }, md());
    await t2.Start!({ id: id2, exec_id: 'tx' }, md());
    const etext = held.read();
    await t2.ResizePty!({ id: id2, exec_id: 'tx', width: 60, height: 20 }, md());
    assert.equal((await ewait).exit_status, 0);
    await t2.Delete!({ id: id2, exec_id: 'tx' }, md());
    assert.equal((await etext).trim(), '20 60');
    await t2.Kill!({ id: id2, signal: 9 }, md());
    await t2.Wait!({ id: id2 }, md());
    await t2.Delete!({ id: id2 }, md());
  });

  test('an OOM kill: /tasks/oom before /tasks/exit, status 137', async () => {
    const id = 'c-oom';
    const bundle = makeBundle(dir, id, { args: ['/bin/sh', '-c', 'a=aaaaaaaaaaaaaaaa; while true; do a=$a$a; done'], memoryLimit: 32 << 20 });
    const t = await serve(id, bundle);
    await t.Create!({ id, bundle, rootfs: rootMount(dir) }, md());
    const waiting = t.Wait!({ id }, md());
    await t.Start!({ id }, md());
    assert.equal((await waiting).exit_status, 137);
    await events.waitFor(() => events.of(id).some((f) => f.topic === '/tasks/exit'));
    const topics = events.of(id).map((f) => f.topic);
    assert.ok(topics.includes('/tasks/oom'), topics.join(' '));
    assert.ok(topics.indexOf('/tasks/oom') < topics.indexOf('/tasks/exit'), topics.join(' '));
    assert.equal(topics.filter((x) => x === '/tasks/oom').length, 1);
    await t.Delete!({ id }, md());
  });

  test("Delete: the rootfs is unmounted, after a poststop hook has run (it may still look at it)", async () => {
    const id = 'c-poststop';
    const bundle = makeBundle(dir, id, { args: ['/bin/true'] });
    const seen = join(dir, 'poststop-saw');
    const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
    spec.hooks = { poststop: [{ path: '/bin/sh', args: ['sh', '-c', `test -e ${join(bundle, 'rootfs', 'bin', 'sh')} && echo mounted > ${seen} || echo gone > ${seen}`] }] };
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    const t = await serve(id, bundle);
    await t.Create!({ id, bundle, rootfs: rootMount(dir) }, md());
    const waiting = t.Wait!({ id }, md());
    await t.Start!({ id }, md());
    await waiting;
    await t.Delete!({ id }, md());
    assert.equal(readFileSync(seen, 'utf8').trim(), 'mounted');
    assert.equal(existsSync(join(bundle, 'rootfs', 'bin', 'sh')), false, 'unmounted after the delete');
    // without hooks the unmount runs beside runc delete: gone all the same once Delete answers
    const id2 = 'c-nohook';
    const b2 = makeBundle(dir, id2, { args: ['/bin/true'] });
    const t2 = await serve(id2, b2);
    await t2.Create!({ id: id2, bundle: b2, rootfs: rootMount(dir) }, md());
    const w2 = t2.Wait!({ id: id2 }, md());
    await t2.Start!({ id: id2 }, md());
    await w2;
    assert.equal(existsSync(join(b2, 'rootfs', 'bin', 'sh')), true);
    await t2.Delete!({ id: id2 }, md());
    assert.equal(existsSync(join(b2, 'rootfs', 'bin', 'sh')), false, 'unmounted once Delete answered');
  });

  test('20 containers at once on one host: each its own exit code, output and events', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `c-par${i}`);
    await Promise.all(
      ids.map(async (id, i) => {
        const bundle = makeBundle(dir, id, { args: ['/bin/sh', '-c', `echo out-${i}; exit ${i}`] });
        const t = await serve(id, bundle);
        const out = mkfifo(join(dir, 'fifo', `${id}-out`));
        await t.Create!({ id, bundle, rootfs: rootMount(dir), stdout: out, stderr: out }, md());
        const text = readFifo(out);
        const waiting = t.Wait!({ id }, md());
        await t.Start!({ id }, md());
        assert.equal((await waiting).exit_status, i);
        assert.equal(await text, `out-${i}\n`);
        assert.equal((await t.Delete!({ id }, md())).exit_status, i);
        await t.Shutdown!({ id }, md());
      }),
    );
    await events.waitFor(() => ids.every((id) => events.of(id).some((f) => f.topic === '/tasks/delete')));
    for (const id of ids) assert.deepEqual(events.of(id).map((f) => f.topic), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    const info = await host.Info!({});
    assert.ok(!ids.some((id) => info.containers.includes(`${ns}/${id}`)), 'shut down containers are forgotten');
  });

  test('an event is retried while the events endpoint is down, and delivered in order once it is back', async () => {
    const id = 'c-retry';
    const bundle = makeBundle(dir, id, { args: ['/bin/sh', '-c', 'exit 5'] });
    const t = await serve(id, bundle);
    await events.down();
    await t.Create!({ id, bundle, rootfs: rootMount(dir) }, md());
    const waiting = t.Wait!({ id }, md());
    await t.Start!({ id }, md());
    assert.equal((await waiting).exit_status, 5);
    await sleep(1500); // several failed tries
    assert.equal(events.of(id).length, 0);
    assert.ok(readdirSync(join(state, 'events')).length > 0, 'the undelivered events are spooled');
    await events.up();
    await events.waitFor(() => events.of(id).some((f) => f.topic === '/tasks/exit'), 5000);
    assert.deepEqual(events.of(id).map((f) => f.topic), ['/tasks/create', '/tasks/start', '/tasks/exit']);
    assert.equal(events.of(id)[2]!.event.exit_status, 5);
    await t.Delete!({ id }, md());
  });

  test('kill -9 of the host: a new host re-adopts the running container and reports the one that exited meanwhile', async () => {
    const bundles: Record<string, string> = {};
    const pids: Record<string, number> = {};
    for (const id of ['c-keep', 'c-lost']) {
      bundles[id] = makeBundle(dir, id, { args: ['/bin/sleep', '600'] });
      const t = await serve(id, bundles[id]!);
      pids[id] = (await t.Create!({ id, bundle: bundles[id], rootfs: rootMount(dir) }, md())).pid;
      await t.Start!({ id }, md());
    }
    await events.waitFor(() => ['c-keep', 'c-lost'].every((id) => events.of(id).some((f) => f.topic === '/tasks/start')));
    process.kill(hostPid, 'SIGKILL');
    for (let i = 0; i < 100 && alive(hostPid); i++) await sleep(20);
    hostClient.close();
    assert.ok(alive(pids['c-keep']!) && alive(pids['c-lost']!), 'the containers outlive their host');
    process.kill(pids['c-lost']!, 'SIGKILL');
    for (let i = 0; i < 100 && alive(pids['c-lost']!); i++) await sleep(20);

    const h = await startHost(state, address, events.path);
    hostPid = h.proc.pid!;
    hostClient = h.client;
    host = h.host;
    const info = await host.Info!({});
    assert.ok(info.containers.includes(`${ns}/c-keep`) && info.containers.includes(`${ns}/c-lost`), info.containers.join(' '));

    // the same sockets answer again
    const keep = task(await taskClient(readFileSync(join(bundles['c-keep']!, 'address'), 'utf8')));
    const lost = task(await taskClient(readFileSync(join(bundles['c-lost']!, 'address'), 'utf8')));
    const ks = await keep.State!({ id: 'c-keep' }, md());
    assert.equal(ks.status, 'RUNNING');
    assert.equal(ks.pid, pids['c-keep']);
    const ls = await lost.State!({ id: 'c-lost' }, md());
    assert.equal(ls.status, 'STOPPED');
    assert.equal(ls.exit_status, 255, 'nobody recorded its status: 255, as containerd reports a lost process');
    await events.waitFor(() => events.of('c-lost').some((f) => f.topic === '/tasks/exit'));
    assert.equal(events.of('c-lost').filter((f) => f.topic === '/tasks/exit').length, 1);

    // the re-adopted one is still fully served: exec, kill, wait, delete
    const pids2 = await keep.Pids!({ id: 'c-keep' }, md());
    assert.deepEqual(pids2.processes.map((p: any) => p.pid), [pids['c-keep']]);
    const waiting = keep.Wait!({ id: 'c-keep' }, md());
    await keep.Kill!({ id: 'c-keep', signal: 9 }, md());
    assert.equal((await waiting).exit_status, 137);
    await keep.Delete!({ id: 'c-keep' }, md());
    await lost.Delete!({ id: 'c-lost' }, md());
    await events.waitFor(() => events.of('c-keep').some((f) => f.topic === '/tasks/delete'));
  });

  test('containerd\'s binary protocol: start prints the address (starting a host), delete answers a DeleteResponse', async () => {
    const id = 'c-bin';
    const bundle = makeBundle(dir, id, { args: ['/bin/sleep', '600'] });
    const state2 = join(dir, 'state-bin');
    const env = { ...process.env, TTRPC_ADDRESS: events.path, BERTH_SHIM_STATE: state2 };
    const opts = codec('google.protobuf.Any').encode({ type_url: 'containerd.runc.v1.Options', value: codec('containerd.runc.v1.Options').encode({ binary_name: 'runc' }) });
    const start = spawnSync(process.execPath, [MAIN, '-namespace', ns, '-address', address, '-publish-binary', '/bin/true', '-id', id, 'start'], { cwd: bundle, env, input: opts });
    assert.equal(start.status, 0, start.stderr.toString());
    const addr = start.stdout.toString();
    assert.match(addr, new RegExp(`^unix://${state2}/s/[0-9a-f]{64}$`));
    assert.equal(readFileSync(join(bundle, 'address'), 'utf8'), addr);
    const hostPid2 = Number(execFileSync('sh', ['-c', `fuser ${state2}/host.sock 2>/dev/null || true`]).toString().trim().split(/\s+/)[0]) || 0;
    const t = task(await taskClient(addr));
    const conn = await t.Connect!({ id });
    extraHosts.push(conn.shim_pid);
    if (hostPid2) assert.equal(conn.shim_pid, hostPid2);
    const pid = (await t.Create!({ id, bundle, rootfs: rootMount(dir) }, md())).pid;
    await t.Start!({ id }, md());
    const del = spawnSync(process.execPath, [MAIN, '-namespace', ns, '-address', address, '-publish-binary', '/bin/true', '-id', id, '-bundle', bundle, 'delete'], { cwd: bundle, env });
    assert.equal(del.status, 0, del.stderr.toString());
    const d = codec('containerd.task.v2.DeleteResponse').decode(del.stdout);
    assert.equal(d.exit_status, 137);
    assert.equal(d.pid, pid);
    assert.equal(alive(pid), false);
    // the binary host stops once asked and nothing is left
    const hc = await TtrpcClient.connect(join(state2, 'host.sock'));
    await serviceClient(hc, service('berth.shim.v1.Host')).Shutdown!({ now: false }).catch(() => {});
    hc.close();
    for (let i = 0; i < 100 && alive(conn.shim_pid); i++) await sleep(20);
    assert.equal(alive(conn.shim_pid), false);
  });
});
