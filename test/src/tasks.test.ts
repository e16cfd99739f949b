// Tasks end to end: the real ctr runs containers of the local registry's images on the stack,
// once with Debian's stock containerd-shim-runc-v2 configured and once with Berth's shim host
// (when it is built): run --rm with stdout and exit codes, -t, -d and the task commands, the
// layered image's rootfs, a runc wrapper chosen through the runc options, events once each, and
// what is left behind after a delete (nothing).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { codec } from '@berth/api';
import { BusClient, rpcSubject } from '@berth/bus';
import { metadata, outcome, unary } from './grpc.js';
import { ctr, endShimHosts, natsWith, repo, run, shared, sleep, startStack, until, type Run, type Stack } from './harness.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const BB = `${registry}/library/busybox:latest`;
const LY = `${registry}/library/layered:latest`;
const hostBuilt = existsSync(join(repo, 'shim', 'dist', 'main.js'));
const runnable = process.getuid?.() === 0 && existsSync('/usr/sbin/runc');

function config(dir: string, kind: 'stock' | 'berth'): string {
  const file = join(dir, `${kind}.toml`);
  writeFileSync(
    file,
    `[tasks.runtimes]\n"io.containerd.runc.v2" = "${kind}"\n"io.containerd.runc.v1" = "${kind}"\n"io.containerd.runtime.v1.linux" = "${kind}"\n`,
  );
  return file;
}

/** `ctr events` in the background: its lines so far, and a stop. */
function watchEvents(sock: string, ns: string): { lines: () => string[]; stop: () => Promise<void> } {
  const p = spawn('ctr', ['--address', sock, 'events', `namespace==${ns}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (b) => (out += b));
  const exited = new Promise((r) => p.once('exit', r));
  return {
    lines: () => out.split('\n').filter(Boolean),
    async stop() {
      p.kill('SIGTERM');
      await exited;
    },
  };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The init pid `ctr tasks ls` shows for a task. */
async function taskPid(sock: string, ns: string, id: string): Promise<number> {
  const ls = await ctr(sock, '-n', ns, 'tasks', 'ls');
  const line = ls.stdout.split('\n').find((l) => l.split(/\s+/)[0] === id);
  return Number(line?.split(/\s+/)[1] ?? 0);
}

/** Berth's shim host outlives the stack by design: a test ends the one its stack started. */
async function endShimHost(stack: Stack | undefined): Promise<void> {
  if (stack) endShimHosts(join(stack.state, 'shim'));
}

async function status(sock: string, ns: string, id: string): Promise<string> {
  const ls = await ctr(sock, '-n', ns, 'tasks', 'ls');
  return ls.stdout.split('\n').find((l) => l.split(/\s+/)[0] === id)?.split(/\s+/)[2] ?? '';
}


/** Kills and removes what a test left running, then the stack, its shim host and its folder. */
async function teardown(C: (...args: string[]) => Promise<Run>, stack: Stack | undefined, tmp: string): Promise<void> {
  for (const t of (await C('tasks', 'ls', '-q')).stdout.split('\n').filter(Boolean)) {
    await C('tasks', 'kill', '-a', '-s', 'KILL', t);
    await sleep(200);
    await C('tasks', 'rm', '-f', t);
  }
  await stack?.stop();
  await endShimHost(stack);
  rmSync(tmp, { recursive: true, force: true });
}

for (const kind of ['stock', 'berth'] as const) {
  describe(`tasks with the ${kind} shim`, { skip: (!runnable && 'needs root and runc') || (kind === 'berth' && !hostBuilt && 'shim/ is not built'), timeout: 300_000 }, () => {
    let stack: Stack;
    let registryUp = false;
    const ns = `it-tasks-${kind}-${process.pid}`;
    const tmp = mkdtempSync('/tmp/berth-tasks-it-');
    let C: (...args: string[]) => ReturnType<typeof ctr>;

    before(async () => {
      const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
      stack = await startStack({ config: config(tmp, kind) });
      C = (...args) => ctr(stack.sock, '-n', ns, ...args);
      registryUp = (await reg).code === 0;
      if (registryUp) {
        for (const image of [BB, LY]) {
          const r = await C('images', 'pull', '--plain-http', image);
          assert.equal(r.code, 0, r.stderr);
        }
      }
    });
    after(() => teardown(C, stack, tmp));

    test('run --rm: stdout, and the exit code passed through', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const r = await C('run', '--rm', BB, 'r1', 'echo', 'hello-from-run');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'hello-from-run\n');
      const e = await C('run', '--rm', BB, 'r2', 'sh', '-c', 'echo to-stderr >&2; exit 7');
      assert.equal(e.code, 7);
      assert.match(e.stderr, /to-stderr/);
      assert.equal((await C('containers', 'ls', '-q')).stdout.includes('r2'), false, 'run --rm removed the container');
    });

    test('run --rm of one id again and again: each create waits for the last shim to let go, none fails', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      for (let i = 0; i < 8; i++) {
        const r = await C('run', '--rm', BB, 'again', 'echo', `round-${i}`);
        assert.equal(r.code, 0, `round ${i}: ${r.stderr}`);
        assert.equal(r.stdout, `round-${i}\n`);
      }
      assert.equal((await C('tasks', 'ls', '-q')).stdout.includes('again'), false);
    });

    test('run --rm -t: a terminal', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const r = await run('script', ['-qc', `ctr --address ${stack.sock} -n ${ns} run --rm -t ${BB} r3 sh -c 'tty; stty size'`, '/dev/null']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /\/dev\/pts\/\d+/);
    });

    test("the layered image's rootfs: /bin/check-expected prints OK", async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const r = await C('run', '--rm', LY, 'r5', '/bin/check-expected');
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.equal(r.stdout.trim(), 'OK');
    });

    test('-d and the task commands: ls, ps, exec, pause, resume, metrics, kill, delete; nothing left behind', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const events = watchEvents(stack.sock, ns);
      await sleep(500);
      assert.equal((await C('run', '-d', BB, 'd1', 'sleep', '300')).code, 0);
      assert.equal(await status(stack.sock, ns, 'd1'), 'RUNNING');
      const pid = await taskPid(stack.sock, ns, 'd1');
      assert.ok(pid > 0 && alive(pid));
      const ps = await C('tasks', 'ps', 'd1');
      assert.match(ps.stdout, new RegExp(`^${pid}\\s`, 'm'));
      const ex = await C('tasks', 'exec', '--exec-id', 'e1', 'd1', 'sh', '-c', 'echo exec-out; exit 4');
      assert.equal(ex.stdout, 'exec-out\n');
      assert.equal(ex.code, 4);
      assert.equal((await C('tasks', 'pause', 'd1')).code, 0);
      assert.equal(await status(stack.sock, ns, 'd1'), 'PAUSED');
      assert.equal((await C('tasks', 'resume', 'd1')).code, 0);
      assert.equal(await status(stack.sock, ns, 'd1'), 'RUNNING');
      const m = await C('tasks', 'metrics', '--format', 'json', 'd1');
      assert.equal(m.code, 0, m.stderr);
      const metric = JSON.parse(m.stdout);
      assert.ok(metric.memory || metric.Memory, `memory in ${m.stdout.slice(0, 300)}`);
      const bundle = join(stack.state, 'tasks', ns, 'd1');
      assert.ok(existsSync(join(bundle, 'config.json')) && existsSync(join(bundle, 'address')));
      // a running task cannot be deleted
      const busy = await C('tasks', 'rm', 'd1');
      assert.notEqual(busy.code, 0);
      assert.equal((await C('tasks', 'kill', '-s', 'KILL', 'd1')).code, 0);
      await until(async () => (await status(stack.sock, ns, 'd1')) === 'STOPPED', 5000, 'd1 STOPPED');
      const rm = await C('tasks', 'rm', 'd1');
      assert.equal(rm.code, 0, rm.stderr);
      assert.equal(existsSync(bundle), false, 'bundle removed');
      // the renamed work folder's files go after the answer (bundle.ts): gone soon, not at once
      const works = join(stack.root, 'tasks', 'work', ns);
      await until(async () => (existsSync(works) ? readdirSync(works) : []).length === 0, 5000, 'no work folder left');
      assert.equal((await C('containers', 'rm', 'd1')).code, 0);
      await sleep(500);
      await events.stop();
      const d1 = events.lines().filter((l) => l.includes('"d1"') && !l.includes('"e1"'));
      const topics = d1.map((l) => l.split(' ').find((w) => w.startsWith('/tasks/'))).filter(Boolean);
      assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/paused', '/tasks/resumed', '/tasks/exit', '/tasks/delete']);
      assert.match(d1.find((l) => l.includes('/tasks/exit'))!, /"exit_status":137/);
    });

    test('errors as containerd gives them', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const none = await C('tasks', 'start', 'no-such');
      assert.match(none.stderr, /container "no-such" in namespace "[^"]+": not found/);
      assert.equal((await C('containers', 'create', BB, 'c-no-task')).code, 0);
      const noTask = await C('tasks', 'kill', 'c-no-task');
      assert.match(noTask.stderr, /task c-no-task not found/);
      assert.equal((await C('run', '-d', BB, 'dup', 'sleep', '60')).code, 0);
      const twice = await C('tasks', 'start', 'dup');
      assert.notEqual(twice.code, 0);
      await C('tasks', 'kill', '-s', 'KILL', 'dup');
      await until(async () => (await status(stack.sock, ns, 'dup')) === 'STOPPED', 5000, 'dup STOPPED');
      assert.equal((await C('tasks', 'rm', 'dup')).code, 0);
      await C('containers', 'rm', 'dup', 'c-no-task');
    });

    test("a task whose container is deleted through the API answers the container's NotFound, as containerd's", async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const md = metadata(ns);
      const api = (svc: string, m: string, req: Record<string, unknown>) => outcome(unary(stack.sock, `/containerd.services.${svc}/${m}`, req, md));
      assert.equal((await C('run', '-d', BB, 'gone1', 'sleep', '300')).code, 0);
      // the task was looked at (so its container is known) before the container goes
      assert.equal(await api('tasks.v1.Tasks', 'Get', { container_id: 'gone1' }), 'ok');
      assert.equal(await api('containers.v1.Containers', 'Delete', { id: 'gone1' }), 'ok');
      const notFound = `5 container "gone1" in namespace "${ns}": not found`;
      assert.equal(await api('tasks.v1.Tasks', 'Get', { container_id: 'gone1' }), notFound);
      assert.equal(await api('tasks.v1.Tasks', 'Kill', { container_id: 'gone1', signal: 9 }), notFound);
      assert.equal(await api('tasks.v1.Tasks', 'Delete', { container_id: 'gone1' }), notFound);
      // a container of that id again: its task is reachable through it
      const spec = { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Spec', value: Buffer.from('{}') };
      assert.equal(await api('containers.v1.Containers', 'Create', { container: { id: 'gone1', runtime: { name: 'io.containerd.runc.v2' }, spec } }), 'ok');
      assert.equal(await api('tasks.v1.Tasks', 'Kill', { container_id: 'gone1', signal: 9 }), 'ok');
      await until(async () => (await status(stack.sock, ns, 'gone1')) === 'STOPPED', 5000, 'gone1 STOPPED');
      assert.equal(await api('tasks.v1.Tasks', 'Delete', { container_id: 'gone1' }), 'ok');
      assert.equal(await api('containers.v1.Containers', 'Delete', { id: 'gone1' }), 'ok');
      assert.equal(await api('tasks.v1.Tasks', 'Get', { container_id: 'gone1' }), notFound);
      await C('snapshots', 'rm', 'gone1');
    });

    test('Tasks.Create takes its container as the gateway holds it: never an older copy, never one a client sends', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const md = metadata(ns);
      const gw = await natsWith(stack.natsUrl, stack.credentials('gateway'));
      const lent = async (): Promise<number> => (await gw.request('$SRV.CACHE.berth-gateway.it-node', '', { timeout: 5000 })).json<{ lent: number }>().lent;
      const argsOf = (id: string) => JSON.parse(readFileSync(join(stack.state, 'tasks', ns, id, 'config.json'), 'utf8')).process.args;
      const api = (svc: string, m: string, req: Record<string, unknown>, meta = md) => unary(stack.sock, `/containerd.services.${svc}/${m}`, req, meta);
      try {
        // created, then its task: the record comes with the Create (the gateway kept Create's answer)
        assert.equal((await C('containers', 'create', BB, 'carry1', 'echo', 'one')).code, 0);
        const l0 = await lent();
        await api('tasks.v1.Tasks', 'Create', { container_id: 'carry1' });
        assert.equal(await lent(), l0 + 1, 'the container went along with the call');
        assert.deepEqual(argsOf('carry1'), ['echo', 'one']);
        // its spec changed after it was kept: the task runs the new one
        assert.equal((await C('containers', 'create', BB, 'carry2', 'echo', 'one')).code, 0);
        const { container } = await api('containers.v1.Containers', 'Get', { id: 'carry2' });
        const spec = JSON.parse(Buffer.from(container.spec.value).toString());
        spec.process.args = ['echo', 'two'];
        await api('containers.v1.Containers', 'Update', { container: { id: 'carry2', spec: { type_url: container.spec.type_url, value: Buffer.from(JSON.stringify(spec)) } }, update_mask: { paths: ['spec'] } });
        await api('tasks.v1.Tasks', 'Create', { container_id: 'carry2' });
        assert.deepEqual(argsOf('carry2'), ['echo', 'two']);
        // a client naming a record of its own in the header's name is not heard
        assert.equal((await C('containers', 'create', BB, 'carry3', 'echo', 'three')).code, 0);
        const forged = { ...container, id: 'carry3', spec: { type_url: container.spec.type_url, value: Buffer.from(JSON.stringify({ ...spec, process: { ...spec.process, args: ['echo', 'forged'] } })) } };
        const meta = metadata(ns);
        meta.set('berth-container', Buffer.from(codec('containerd.services.containers.v1.GetContainerResponse').encode({ container: forged })).toString('base64'));
        await api('containers.v1.Containers', 'Update', { container: { id: 'carry3', labels: { x: 'y' } }, update_mask: { paths: ['labels.x'] } });
        await api('tasks.v1.Tasks', 'Create', { container_id: 'carry3' }, meta);
        assert.deepEqual(argsOf('carry3'), ['echo', 'three']);
      } finally {
        await gw.close();
        for (const id of ['carry1', 'carry2', 'carry3']) {
          await outcome(api('tasks.v1.Tasks', 'Delete', { container_id: id }));
          await C('containers', 'rm', id);
        }
      }
    });

    test("a stopped task's Get: the exit the shim recorded, the same every time, until the delete", async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const md = metadata(ns);
      const api = (svc: string, m: string, req: Record<string, unknown>) => unary(stack.sock, `/containerd.services.${svc}/${m}`, req, md);
      assert.equal((await C('containers', 'create', BB, 'fin1', 'false')).code, 0);
      try {
        const { pid } = await api('tasks.v1.Tasks', 'Create', { container_id: 'fin1' });
        const running = (await api('tasks.v1.Tasks', 'Get', { container_id: 'fin1' })).process;
        assert.equal(running.status, 'CREATED');
        await api('tasks.v1.Tasks', 'Start', { container_id: 'fin1' });
        const waited = await api('tasks.v1.Tasks', 'Wait', { container_id: 'fin1' });
        assert.equal(waited.exit_status, 1);
        const seen = [];
        for (let i = 0; i < 3; i++) {
          seen.push((await api('tasks.v1.Tasks', 'Get', { container_id: 'fin1' })).process);
          await sleep(50);
        }
        for (const p of seen) {
          assert.deepEqual(p, { ...running, status: 'STOPPED', exit_status: 1, exited_at: waited.exited_at }, 'as created, stopped with the exit Wait gave');
          assert.equal(p.pid, pid);
        }
        const deleted = await api('tasks.v1.Tasks', 'Delete', { container_id: 'fin1' });
        assert.equal(deleted.exit_status, 1);
        assert.equal(await outcome(api('tasks.v1.Tasks', 'Get', { container_id: 'fin1' })), '5 task fin1 not found');
      } finally {
        await outcome(api('tasks.v1.Tasks', 'Delete', { container_id: 'fin1' }));
        await C('containers', 'rm', 'fin1');
      }
    });

    test("a task deleted through the gateway: its Get is the gateway's NotFound until the tasks change, by any path", async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const md = metadata(ns);
      const api = (svc: string, m: string, req: Record<string, unknown>) => unary(stack.sock, `/containerd.services.${svc}/${m}`, req, md);
      const get = () => outcome(api('tasks.v1.Tasks', 'Get', { container_id: 'neg1' }));
      const gw = await natsWith(stack.natsUrl, stack.credentials('gateway'));
      const hits = async (): Promise<number> => (await gw.request('$SRV.CACHE.berth-gateway.it-node', '', { timeout: 5000 })).json<{ hits: number }>().hits;
      assert.equal((await C('containers', 'create', BB, 'neg1', 'true')).code, 0);
      try {
        const runToEnd = async () => {
          await api('tasks.v1.Tasks', 'Create', { container_id: 'neg1' });
          await api('tasks.v1.Tasks', 'Start', { container_id: 'neg1' });
          await api('tasks.v1.Tasks', 'Wait', { container_id: 'neg1' });
          await api('tasks.v1.Tasks', 'Delete', { container_id: 'neg1' });
        };
        await runToEnd();
        const h0 = await hits();
        assert.equal(await get(), '5 task neg1 not found');
        assert.equal(await get(), '5 task neg1 not found');
        assert.equal(await hits(), h0 + 2, 'both answered by the gateway');
        // created again through the gateway: seen at once
        await api('tasks.v1.Tasks', 'Create', { container_id: 'neg1' });
        assert.equal(await get(), 'ok');
        await api('tasks.v1.Tasks', 'Delete', { container_id: 'neg1' });
        assert.equal(await get(), '5 task neg1 not found');
        // created again by another caller on the bus (another gateway would): seen at once too
        const bus = new BusClient(gw);
        await bus.unary(rpcSubject('it-node', 'tasks', 'Create'), codec('containerd.services.tasks.v1.CreateTaskRequest').encode({ container_id: 'neg1' }), { namespace: ns });
        assert.equal(await get(), 'ok');
        await api('tasks.v1.Tasks', 'Delete', { container_id: 'neg1' });
        assert.equal(await get(), '5 task neg1 not found');
        // the container deleted: its NotFound, as the tasks service gives it
        assert.equal((await C('containers', 'rm', 'neg1')).code, 0);
        assert.equal(await get(), `5 container "neg1" in namespace "${ns}": not found`);
      } finally {
        await gw.close();
        await outcome(api('tasks.v1.Tasks', 'Delete', { container_id: 'neg1' }));
        await C('containers', 'rm', 'neg1');
      }
    });

    test("the runc options' BinaryName: another OCI runtime per container (a runc wrapper that leaves a trace)", async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const trace = join(tmp, 'trace');
      const wrapper = join(tmp, 'runc-wrap');
      writeFileSync(wrapper, `#!/bin/sh\necho "$@" >> ${trace}\nexec /usr/sbin/runc "$@"\n`);
      chmodSync(wrapper, 0o755);
      const r = await C('run', '--rm', '--runc-binary', wrapper, BB, 'w1', 'echo', 'wrapped');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'wrapped\n');
      const calls = readFileSync(trace, 'utf8');
      assert.match(calls, /\bcreate\b.*w1/);
      assert.match(calls, /\bstart\b.*w1/);
      assert.match(calls, /\bdelete\b.*w1/);
    });
  });
}

for (const kind of ['stock', 'berth'] as const) {
  describe(`recovery with the ${kind} shim: kill -9 of the tasks service while containers run`, { skip: (!runnable && 'needs root and runc') || (kind === 'berth' && !hostBuilt && 'shim/ is not built'), timeout: 300_000 }, () => {
    let stack: Stack;
    let registryUp = false;
    const ns = `it-recover-${kind}-${process.pid}`;
    const tmp = mkdtempSync('/tmp/berth-tasks-rec-');
    const faults = join(tmp, 'faults');
    let C: (...args: string[]) => ReturnType<typeof ctr>;

    before(async () => {
      const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
      stack = await startStack({ config: config(tmp, kind), env: { BERTH_FAULTS_FILE: faults } });
      C = (...args) => ctr(stack.sock, '-n', ns, ...args);
      registryUp = (await reg).code === 0;
      if (registryUp) assert.equal((await C('images', 'pull', '--plain-http', BB)).code, 0);
    });
    after(() => teardown(C, stack, tmp));

    test('the tasks service killed after a delete, before it told the shim: the restarted service ends that shim', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      // Berth's shim: the host's registry of what it serves; the stock shim: its own process
      const registry = join(stack.state, 'shim', 'containers');
      const hosted = () => readdirSync(registry).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(readFileSync(join(registry, f), 'utf8')) as { id: string; namespace: string });
      let shimPid = 0;
      const served = () => (kind === 'berth' ? hosted().some((r) => r.id === 'cut1' && r.namespace === ns) : alive(shimPid));
      assert.equal((await C('run', '-d', BB, 'cut1', 'sleep', '300')).code, 0);
      if (kind === 'stock') shimPid = Number((await run('pgrep', ['-f', `containerd-shim-runc-v2 -namespace ${ns} -id cut1 `])).stdout.trim());
      assert.ok(kind === 'berth' || shimPid > 0, 'the stock shim found');
      assert.ok(served(), 'its shim serves it');
      assert.equal((await C('tasks', 'kill', '-s', 'KILL', 'cut1')).code, 0);
      await until(async () => (await status(stack.sock, ns, 'cut1')) === 'STOPPED', 5000, 'cut1 STOPPED');
      const before = stack.pid('tasks');
      writeFileSync(faults, 'tasks-delete-before-shutdown');
      await C('tasks', 'rm', 'cut1'); // answered or cut off by the crash: the task is gone either way
      await until(async () => stack.pid('tasks') !== before, 10_000, 'the tasks service restarted');
      await until(async () => !served(), 10_000, 'cut1 is served no more');
      const left = readdirSync(join(stack.state, 'tasks', ns)).filter((n) => n.includes('cut1'));
      assert.deepEqual(left, [], 'no bundle left');
      assert.equal((await C('tasks', 'ls', '-q')).stdout.includes('cut1'), false);
      // the id serves again: a new task of the container runs, and the old shim's end is not its
      assert.equal((await C('tasks', 'start', '-d', 'cut1')).code, 0);
      await sleep(500);
      assert.equal(await status(stack.sock, ns, 'cut1'), 'RUNNING');
      assert.equal((await C('tasks', 'kill', '-s', 'KILL', 'cut1')).code, 0);
      await until(async () => (await status(stack.sock, ns, 'cut1')) === 'STOPPED', 5000, 'the new cut1 STOPPED');
      assert.equal((await C('tasks', 'rm', 'cut1')).code, 0);
      assert.equal((await C('containers', 'rm', 'cut1')).code, 0);
    });

    test('the 4 running answer exec, metrics, kill and wait afterwards; the exit meanwhile is reported once, with its status', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      for (const id of ['k1', 'k2', 'k3', 'k4']) assert.equal((await C('run', '-d', BB, id, 'sleep', '300')).code, 0);
      // exits 3 on SIGTERM (as pid 1 it has to ask for the signal)
      assert.equal((await C('run', '-d', BB, 'k5', 'sh', '-c', 'trap "exit 3" TERM; while :; do sleep 0.1; done')).code, 0);
      const k5 = await taskPid(stack.sock, ns, 'k5');
      const events = watchEvents(stack.sock, ns);
      await sleep(500);
      const before = stack.pid('tasks');
      process.kill(before, 'SIGKILL');
      process.kill(k5, 'SIGTERM'); // while the tasks service is down
      await until(async () => !alive(k5), 5000, 'k5 exited');
      await until(async () => stack.pid('tasks') !== before && (await C('tasks', 'ls')).code === 0, 20_000, 'tasks service back');
      for (const id of ['k1', 'k2', 'k3', 'k4']) {
        assert.equal(await status(stack.sock, ns, id), 'RUNNING', id);
        const ex = await C('tasks', 'exec', '--exec-id', `x-${id}`, id, 'echo', `still-${id}`);
        assert.equal(ex.stdout, `still-${id}\n`, ex.stderr);
        const m = await C('tasks', 'metrics', id);
        assert.equal(m.code, 0, m.stderr);
        assert.match(m.stdout, new RegExp(`^${id}\\s`, 'm'));
      }
      await until(async () => (await status(stack.sock, ns, 'k5')) === 'STOPPED', 5000, 'k5 STOPPED');
      // Wait and Kill through the API after the restart
      const md = metadata(ns);
      const waiting = unary(stack.sock, '/containerd.services.tasks.v1.Tasks/Wait', { container_id: 'k1' }, md);
      await sleep(200);
      assert.equal((await C('tasks', 'kill', '-s', 'KILL', 'k1')).code, 0);
      assert.equal((await waiting).exit_status, 137);
      // the stock shim retries a forward it could not make for up to 15 s; give retries time to arrive
      await sleep(kind === 'stock' ? 4000 : 1500);
      await events.stop();
      const exits = events.lines().filter((l) => l.includes('/tasks/exit') && l.includes('"container_id":"k5"'));
      assert.equal(exits.length, 1, exits.join('\n'));
      assert.match(exits[0]!, /"exit_status":3\b/);
      const rm = await C('tasks', 'rm', 'k5');
      assert.equal(rm.code, 0, rm.stderr);
      assert.match(stack.output() + readFileSync(join(stack.state, 'logs', 'tasks.log'), 'utf8'), /serving 5 tasks again/);
    });

    test('a reboot (the state folder emptied, the shims gone): the tasks are reported exited and their bundles go', async (t) => {
      if (!registryUp) return t.skip('no local registry');
      // b1 alone runs: the reboot below takes only it down
      for (const id of (await C('tasks', 'ls', '-q')).stdout.split('\n').filter(Boolean)) {
        await C('tasks', 'kill', '-s', 'KILL', id);
        await until(async () => (await status(stack.sock, ns, id)) === 'STOPPED', 5000, `${id} STOPPED`);
        assert.equal((await C('tasks', 'rm', id)).code, 0);
      }
      assert.equal((await C('run', '-d', BB, 'b1', 'sleep', '300')).code, 0);
      const pid = await taskPid(stack.sock, ns, 'b1');
      await stack.stop(true);
      // what a reboot does to the containers, their shims and /run
      process.kill(pid, 'SIGKILL');
      await run('sh', ['-c', `pkill -KILL -f -- "-namespace ${ns} .*-id b1 " ; true`]);
      await endShimHost(stack);
      // runc's own state is in /run too: the stock shim's and the shim host's
      await run('runc', ['--root', `/run/containerd/runc/${ns}`, 'delete', '-f', 'b1']);
      await run('runc', ['--root', join(stack.state, 'shim', 'runc', ns), 'delete', '-f', 'b1']);
      await until(async () => !alive(pid), 5000, 'b1 gone');
      const rootfs = join(stack.state, 'tasks', ns, 'b1', 'rootfs');
      await run('umount', [rootfs]);
      rmSync(join(stack.state, 'tasks'), { recursive: true, force: true });
      rmSync(join(stack.state, 'shim'), { recursive: true, force: true });
      stack = await startStack({ config: config(tmp, kind), dir: stack.dir });
      await until(async () => /task \S+\/b1: bundle gone \(reboot\?\): reported exited/.test(readFileSync(join(stack.state, 'logs', 'tasks.log'), 'utf8')), 10_000, 'b1 reported exited');
      assert.equal((await C('tasks', 'ls', '-q')).stdout.includes('b1'), false);
      assert.equal(existsSync(join(stack.state, 'tasks', ns, 'b1')), false);
      // a fresh task of the same container runs
      const again = await C('tasks', 'start', '-d', 'b1');
      assert.equal(again.code, 0, again.stderr);
    });
  });
}
