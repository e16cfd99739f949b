// A stock containerd (the reference 1.6.20) runs Berth's shim as the runtime binary
// `containerd-shim-berth-v2` through the shim binary protocol (`start`, then ttrpc, events to
// its TTRPC_ADDRESS), driven by the real ctr: output and exit codes, -d, exec, ps, pause,
// metrics, kill, stdin through a pipe, a log file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { service } from '@berth/api';
import { TtrpcClient, serviceClient } from '@berth/ttrpc';
import { MAIN, alive, available } from './testkit.js';

const shared = resolve(MAIN, '../../../../shared');
const refScript = join(shared, 'testenv', 'reference-containerd.sh');
const registry = join(shared, 'testenv', 'registry.sh');
const usable = available && existsSync(refScript) && existsSync(registry) && spawnSync('which', ['ctr']).status === 0;
const image = '127.0.0.1:5000/library/busybox:latest';
const runtime = 'io.containerd.berth.v2';

function ctr(sock: string, args: string[], input?: string): Promise<{ code: number; out: string; err: string }> {
  return new Promise((res) => {
    const c = execFile('ctr', ['--address', sock, ...args], { timeout: 60_000 }, (e, out, err) => res({ code: e ? ((e as any).code ?? 1) : 0, out, err }));
    if (input !== undefined) c.stdin!.end(input);
    else c.stdin!.end();
  });
}

describe('a stock containerd runs Berth\'s shim as its runtime binary', { skip: !usable && 'needs root, runc, busybox, ctr, the reference containerd and the test registry', timeout: 180_000 }, () => {
  let dir: string;
  let sock = '';
  const hostState = () => join(dir, 'shim');

  before(async () => {
    dir = mkdtempSync('/tmp/berth-shimref-');
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'containerd-shim-berth-v2'), `#!/bin/sh\nexec ${process.execPath} ${MAIN} "$@"\n`);
    chmodSync(join(bin, 'containerd-shim-berth-v2'), 0o755);
    assert.equal(spawnSync(registry, ['start']).status, 0, 'test registry');
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, BERTH_SHIM_STATE: hostState() };
    const r = spawnSync(refScript, ['start', join(dir, 'ref')], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    sock = r.stdout.trim().split('\n').at(-1)!;
    const pull = await ctr(sock, ['images', 'pull', '--plain-http', image]);
    assert.equal(pull.code, 0, pull.err);
  });

  after(async () => {
    if (sock) spawnSync(refScript, ['stop', join(dir, 'ref')]);
    try {
      const c = await TtrpcClient.connect(join(hostState(), 'host.sock'), { timeoutMs: 2000 });
      const pid = (await serviceClient(c, service('berth.shim.v1.Host')).Info!({})).pid;
      c.close();
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  });

  test('ctr run --rm: output and the exit code through our shim', async () => {
    const r = await ctr(sock, ['run', '--rm', '--runtime', runtime, image, 'r1', 'sh', '-c', 'echo hello through berth; exit 3']);
    assert.equal(r.out, 'hello through berth\n');
    assert.equal(r.code, 3);
    // the host containerd started is ours, under the state folder given, named by containerd's socket
    const cmd = readFileSync(`/proc/${(await hostInfo()).pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    assert.deepEqual(cmd.slice(cmd.indexOf('host')), ['host', '--state', hostState(), '--address', sock, '--ttrpc-address', `${sock}.ttrpc`]);
  });

  async function hostInfo(): Promise<any> {
    const c = await TtrpcClient.connect(join(hostState(), 'host.sock'), { timeoutMs: 2000 });
    try {
      return await serviceClient(c, service('berth.shim.v1.Host')).Info!({});
    } finally {
      c.close();
    }
  }

  test('-d, exec, ps, pause/resume, metrics, kill, tasks ls through our shim', async () => {
    assert.equal((await ctr(sock, ['run', '-d', '--runtime', runtime, image, 'd1', 'sleep', '600'])).code, 0);
    const ls = await ctr(sock, ['tasks', 'ls']);
    assert.match(ls.out, /d1\s+\d+\s+RUNNING/);
    const ex = await ctr(sock, ['tasks', 'exec', '--exec-id', 'x1', 'd1', 'sh', '-c', 'echo from exec; exit 4']);
    assert.equal(ex.out, 'from exec\n');
    assert.equal(ex.code, 4);
    assert.match((await ctr(sock, ['tasks', 'ps', 'd1'])).out, /^\d+/m);
    assert.equal((await ctr(sock, ['tasks', 'pause', 'd1'])).code, 0);
    assert.match((await ctr(sock, ['tasks', 'ls'])).out, /d1\s+\d+\s+PAUSED/);
    assert.equal((await ctr(sock, ['tasks', 'resume', 'd1'])).code, 0);
    const metrics = await ctr(sock, ['tasks', 'metrics', 'd1']);
    assert.match(metrics.out, /memory\.usage_in_bytes\s+\d+/);
    assert.equal((await ctr(sock, ['tasks', 'kill', '-s', 'KILL', 'd1'])).code, 0);
    for (let i = 0; i < 50 && !/d1\s+\d+\s+STOPPED/.test((await ctr(sock, ['tasks', 'ls'])).out); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match((await ctr(sock, ['tasks', 'ls'])).out, /d1\s+\d+\s+STOPPED/);
    assert.equal((await ctr(sock, ['tasks', 'rm', 'd1'])).code, 0);
    assert.equal((await ctr(sock, ['containers', 'rm', 'd1'])).code, 0);
  });

  test('stdin through a pipe reaches EOF; --log-uri file://', async () => {
    const r = await ctr(sock, ['run', '--rm', '--runtime', runtime, image, 'p1', 'cat'], 'piped in\n');
    assert.equal(r.code, 0);
    assert.equal(r.out, 'piped in\n');
    const log = join(dir, 'logs', 'l1.log');
    const l = await ctr(sock, ['run', '--rm', '--log-uri', `file://${log}`, '--runtime', runtime, image, 'l1', 'sh', '-c', 'echo to the log']);
    assert.equal(l.code, 0);
    assert.equal(readFileSync(log, 'utf8'), 'to the log\n');
  });
});
