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
import { ctr, repo, run, shared, sleep, startStack, until, type Stack } from './harness.js';

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

async function status(sock: string, ns: string, id: string): Promise<string> {
  const ls = await ctr(sock, '-n', ns, 'tasks', 'ls');
  return ls.stdout.split('\n').find((l) => l.split(/\s+/)[0] === id)?.split(/\s+/)[2] ?? '';
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
    after(async () => {
      for (const t of (await C('tasks', 'ls', '-q')).stdout.split('\n').filter(Boolean)) {
        await C('tasks', 'kill', '-a', '-s', 'KILL', t);
        await sleep(200);
        await C('tasks', 'rm', '-f', t);
      }
      await stack?.stop();
      rmSync(tmp, { recursive: true, force: true });
    });

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
      assert.deepEqual(readdirSync(join(stack.root, 'tasks', 'work', ns)), [], 'work folder removed');
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
