// `berth run/ps/exec/logs/stop/rm` end to end: Berth's own docker-like commands against a real
// stack (real runc, Berth's shim host), with the local registry's busybox pulled by `run` itself.
// Output, exit statuses, what `ctr` sees left behind, and docker's error wording are checked.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ctr, repo, run, shared, startStack, until, type Run, type Stack } from './harness.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const BB = `${registry}/library/busybox:latest`;
const main = join(repo, 'packages/cli/dist/main.js');
const runnable = process.getuid?.() === 0 && existsSync('/usr/sbin/runc') && existsSync(join(repo, 'shim', 'dist', 'main.js'));

describe('berth container commands', { skip: !runnable && 'needs root, runc and shim/ built', timeout: 180_000 }, () => {
  let stack: Stack;
  let registryUp = false;
  const ns = `it-berth-run-${process.pid}`;
  const tmp = mkdtempSync('/tmp/berth-run-it-');
  /** `berth CMD --address SOCK -n NS ARGS...`: the stack's flags first, as docker's go before the image */
  const B = (cmd: string, args: string[], input?: string): Promise<Run> => run(process.execPath, [main, cmd, '--address', stack.sock, '-n', ns, ...args], { input });
  const C = (...args: string[]) => ctr(stack.sock, '-n', ns, ...args);
  const lines = (r: Run) => r.stdout.split('\n').filter(Boolean);
  const containers = async () => lines(await C('containers', 'ls', '-q'));
  const snapshots = async () => (await C('snapshots', 'ls')).stdout;
  const psRow = async (id: string, all = true) => lines(await B('ps', all ? ['-a'] : [])).find((l) => l.split(/\s+/).at(-1) === id);

  before(async () => {
    const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
    stack = await startStack();
    registryUp = (await reg).code === 0;
  });
  after(async () => {
    if (stack) for (const id of await containers()) await B('rm', ['-f', id]);
    await stack?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('run attached: pulls a missing image, passes stdout, stderr and the exit status', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const r = await B('run', ['--rm', BB, 'sh', '-c', 'echo hi; echo oops >&2; exit 3']);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'hi\n');
    assert.match(r.stderr, /Unable to find image/);
    assert.match(r.stderr, /oops/);
    const again = await B('run', ['--rm', BB, 'true']);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stderr, /Unable to find image/, 'the second run finds the image');
  });

  test('-e, -w, --entrypoint and the image config', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const r = await B('run', ['--rm', '-e', 'FOO=bar', '-w', '/tmp', BB, 'sh', '-c', 'echo $FOO; pwd; echo $PATH; id -u']);
    assert.equal(r.code, 0, r.stderr);
    const [foo, cwd, path, uid] = lines(r);
    assert.deepEqual([foo, cwd, uid], ['bar', '/tmp', '0']);
    assert.match(path!, /\/bin/, 'the image PATH is kept');
    const e = await B('run', ['--rm', '--entrypoint', 'echo', BB, 'a', 'b']);
    assert.equal(e.stdout, 'a b\n', e.stderr);
    const u = await B('run', ['--rm', '-u', 'nobody', BB, 'id', '-u']);
    assert.equal(u.stdout, '65534\n', 'a user name is found in the image\'s /etc/passwd');
  });

  test('--rm leaves no container and no snapshot; without it the exit stays for ps -a', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const r = await B('run', ['--rm', '--name', 'rmme', BB, 'true']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await containers()).includes('rmme'), false);
    assert.doesNotMatch(await snapshots(), /\brmme\b/);
    const k = await B('run', ['--name', 'kept', BB, 'sh', '-c', 'echo out; echo err >&2; exit 2']);
    assert.equal(k.code, 2, k.stderr);
    assert.equal(k.stdout, 'out\n');
    // an attached run's output is kept for logs too, as docker keeps it
    const kl = await B('logs', ['kept']);
    assert.equal(kl.code, 0, kl.stderr);
    assert.deepEqual(lines(kl).sort(), ['err', 'out']);
    assert.match((await psRow('kept')) ?? '', /Exited \(2\)/);
    assert.equal(await psRow('kept', false), undefined, 'ps without -a shows running containers only');
    assert.equal((await B('rm', ['kept'])).code, 0);
    assert.equal((await containers()).includes('kept'), false);
    assert.doesNotMatch(await snapshots(), /\bkept\b/);
  });

  test('-d, ps, logs, exec, stop, rm', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const d = await B('run', ['-d', '--name', 'web', BB, 'sh', '-c', 'echo started; trap "echo bye; exit 0" TERM; while true; do sleep 0.1; done']);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(d.stdout, 'web\n', 'prints the id');
    // the container record holds its snapshot: a collection keeps it
    assert.equal((await run(process.execPath, [main, 'gc', '--address', stack.sock])).code, 0);
    assert.match(await snapshots(), /\bweb\b/);
    const log = join(stack.state, 'logs', 'containers', ns, 'web.log');
    await until(async () => (await B('logs', ['web'])).stdout === 'started\n', 10_000, 'logs show the output');
    assert.equal(existsSync(log), true);
    const ps = await B('ps', []);
    assert.match(ps.stdout.split('\n')[0]!, /^CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+NAMES$/);
    assert.match((await psRow('web', false)) ?? '', new RegExp(`^web\\s+${BB.replace(/[.]/g, '\\.')}\\s+"sh -c .*\\s+Up `));
    assert.deepEqual(lines(await B('ps', ['-q'])), ['web']);

    const x = await B('exec', ['web', 'sh', '-c', 'echo in-exec; echo to-err >&2; exit 5']);
    assert.equal(x.code, 5, x.stderr);
    assert.equal(x.stdout, 'in-exec\n');
    assert.match(x.stderr, /to-err/);
    const xi = await B('exec', ['-i', '-e', 'V=1', '-w', '/etc', 'web', 'sh', '-c', 'cat; echo $V; pwd'], 'piped\n');
    assert.equal(xi.stdout, 'piped\n1\n/etc\n', xi.stderr);

    const s = await B('stop', ['-t', '10', 'web']);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(s.stdout, 'web\n');
    assert.match((await psRow('web')) ?? '', /Exited \(0\)/, 'the TERM trap ran: exit 0');
    assert.equal((await B('logs', ['web'])).stdout, 'started\nbye\n');
    const notRunning = await B('exec', ['web', 'true']);
    assert.notEqual(notRunning.code, 0);
    assert.match(notRunning.stderr, /Container web is not running/);

    const rm = await B('rm', ['web']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(await psRow('web'), undefined);
    assert.equal((await containers()).includes('web'), false);
    assert.doesNotMatch(await snapshots(), /\bweb\b/);
    assert.equal(existsSync(log), false, 'the log goes with the container');
  });

  test('stop: SIGKILL after the timeout; rm -f kills a running one, rm alone refuses', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    // pid 1 without a handler ignores SIGTERM
    assert.equal((await B('run', ['-d', '--name', 'stubborn', BB, 'sleep', '100'])).code, 0);
    const s = await B('stop', ['-t', '1', 'stubborn']);
    assert.equal(s.code, 0, s.stderr);
    assert.match((await psRow('stubborn')) ?? '', /Exited \(137\)/);
    assert.equal((await B('rm', ['stubborn'])).code, 0);

    assert.equal((await B('run', ['-d', '--name', 'busy', BB, 'sleep', '100'])).code, 0);
    const refused = await B('rm', ['busy']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /You cannot remove a running container busy/);
    const forced = await B('rm', ['-f', 'busy']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal((await containers()).includes('busy'), false);
    assert.doesNotMatch(await snapshots(), /\bbusy\b/);
  });

  test('logs -f follows until the container exits; -d --rm removes it after its exit', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    assert.equal((await B('run', ['-d', '--name', 'chat', BB, 'sh', '-c', 'echo one; sleep 1; echo two'])).code, 0);
    const f = await B('logs', ['-f', 'chat']);
    assert.equal(f.code, 0, f.stderr);
    assert.equal(f.stdout, 'one\ntwo\n');
    assert.equal((await B('rm', ['chat'])).code, 0);

    assert.equal((await B('run', ['-d', '--rm', '--name', 'gone', BB, 'sleep', '0.3'])).code, 0);
    // removed in the background (the container, then its snapshot)
    await until(async () => !(await containers()).includes('gone') && !/\bgone\b/.test(await snapshots()), 15_000, 'the -d --rm container and its snapshot are removed');
  });

  test('-dit: a detached terminal keeps a shell alive, its output in logs, exec and stop work', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const d = await B('run', ['-dit', '--name', 'shell', BB, 'sh', '-c', 'tty; echo up; exec sh']);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(d.stdout.trim(), 'shell');
    // the terminal's output reaches the log (with the terminal's line ends, as docker logs shows them)
    await until(async () => (await B('logs', ['shell'])).stdout.includes('up'), 15_000, 'the detached terminal logs');
    const logs = (await B('logs', ['shell'])).stdout;
    assert.match(logs, /\/dev\/pts\/\d+\r\nup\r\n/);
    // a shell on a terminal nobody writes to waits, as under docker -dit
    await new Promise((r) => setTimeout(r, 500));
    assert.match((await psRow('shell', false)) ?? '', /\bUp\b/, 'the shell is still running');
    const e = await B('exec', ['shell', 'echo', 'inside']);
    assert.equal(e.stdout, 'inside\n', e.stderr);
    assert.equal((await B('stop', ['-t', '1', 'shell'])).code, 0);
    assert.match((await psRow('shell')) ?? '', /Exited/);
    assert.equal((await B('rm', ['shell'])).code, 0);
  });

  test('-i forwards stdin; -t gives the process a terminal', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const i = await B('run', ['--rm', '-i', BB, 'sh', '-c', 'cat; echo end'], 'hello\n');
    assert.equal(i.code, 0, i.stderr);
    assert.equal(i.stdout, 'hello\nend\n');
    const noI = await B('run', ['--rm', BB, 'cat'], 'ignored\n');
    assert.equal(noI.stdout, '', 'without -i the process gets no stdin');
    const cmd = `${process.execPath} ${main} run --address ${stack.sock} -n ${ns} --rm -t ${BB} sh -c 'tty; test -t 0 && test -t 1 && echo both-tty; exit 4'`;
    const tt = await run('script', ['-eqc', cmd, '/dev/null']);
    assert.equal(tt.code, 4, tt.stdout);
    assert.match(tt.stdout, /\/dev\/pts\/\d+/);
    assert.match(tt.stdout, /both-tty/);
  });

  test("an attached run forwards the signals it gets (docker's sig-proxy)", async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const p = spawn(process.execPath, [main, 'run', '--address', stack.sock, '-n', ns, '--rm', BB, 'sh', '-c', 'trap "echo got-int; exit 9" INT; echo ready; while true; do sleep 0.1; done'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b) => (out += b));
    const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    await until(async () => out.includes('ready'), 20_000, 'the container is up');
    p.kill('SIGINT');
    assert.equal(await exited, 9);
    assert.equal(out, 'ready\ngot-int\n');
  });

  test('errors: unknown container, a name in use, a command that is not there', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    for (const [cmd, args] of [['logs', ['nope']], ['stop', ['nope']], ['rm', ['nope']], ['exec', ['nope', 'true']]] as const) {
      const r = await B(cmd, [...args]);
      assert.equal(r.code, 1, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, /No such container: nope/, cmd);
    }
    assert.equal((await B('run', ['--name', 'twice', BB, 'true'])).code, 0);
    const dup = await B('run', ['--name', 'twice', BB, 'true']);
    assert.equal(dup.code, 125);
    assert.match(dup.stderr, /Conflict\. The container name "twice" is already in use/);
    assert.equal((await B('rm', ['twice'])).code, 0);
    const missing = await B('run', ['--rm', BB, 'no-such-command']);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /executable file not found/);
    const di = await B('run', ['-d', '-i', BB, 'cat']);
    assert.equal(di.code, 125);
    assert.match(di.stderr, /run -d -i needs -t/);
    assert.equal((await containers()).length, 0, 'nothing is left behind');
  });
});
