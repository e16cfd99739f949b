// Docker Engine 20.10 (Debian's docker.io) on Berth: dockerd started with --containerd on the
// stack's socket (its own data and exec roots in a temp dir) runs the local registry's busybox,
// and the same scenario runs against the reference containerd. Docker differs from ctr in what
// it relies on: it learns of exits only from events (namespace `moby`, topic filters, no Wait),
// wants /tasks/oom before /tasks/exit to report OOMKilled, creates containers with a rootfs path
// and no snapshot, sends runc options as an Any, and with --live-restore finds its containers
// again after its own restart. Each of these is asserted below.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ctr, run, shared, sleep, startReference, startStack, until, type Reference, type Run, type Stack } from './harness.js';

const DOCKERD = '/usr/sbin/dockerd';
/** Debian's 20.10 client (another docker on PATH may be a newer one) */
const DOCKER = '/usr/bin/docker';
const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const BB = `${registry}/library/busybox:latest`;

/** Why the test cannot run here, or '' when it can; docker.io is installed when it is missing. */
function unavailable(): string {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync('/usr/sbin/runc')) return 'needs runc';
  if (!existsSync(DOCKERD) || !existsSync(DOCKER)) {
    try {
      // RUNLEVEL=1: the package's init scripts do not start the system's docker service
      execFileSync('apt-get', ['install', '-y', 'docker.io'], { timeout: 300_000, stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', RUNLEVEL: '1' } });
    } catch {
      // judged below
    }
    if (!existsSync(DOCKERD) || !existsSync(DOCKER)) return "docker.io is not installed and not installable (apt-get install -y docker.io failed)";
  }
  return '';
}
const skip = unavailable();

/** One dockerd of this test: on a containerd socket, everything of its own under `dir`. */
class Dockerd {
  proc?: ChildProcess;
  readonly sock: string;

  constructor(
    readonly containerd: string,
    readonly dir: string,
  ) {
    this.sock = join(dir, 'docker.sock');
  }

  async start(extra: string[] = []): Promise<void> {
    const log = openSync(join(this.dir, 'dockerd.log'), 'a');
    const d = this.dir;
    this.proc = spawn(
      DOCKERD,
      [
        `--containerd=${this.containerd}`,
        ...['--data-root', join(d, 'docker'), '--exec-root', join(d, 'exec'), '--pidfile', join(d, 'docker.pid'), '-H', `unix://${this.sock}`],
        ...['--bridge=none', '--iptables=false', '--ip-masq=false', '--ip6tables=false', '--insecure-registry', registry, '--shutdown-timeout', '3'],
        ...extra,
      ],
      { stdio: ['ignore', log, log] },
    );
    const exited = new Promise<void>((r) => this.proc!.once('exit', () => r()));
    let dead = false;
    void exited.then(() => (dead = true));
    await until(async () => dead || (await this.d('version')).code === 0, 60_000, 'dockerd answers');
    if (dead) throw new Error(`dockerd exited:\n${this.log()}`);
  }

  log(): string {
    return readFileSync(join(this.dir, 'dockerd.log'), 'utf8').split('\n').slice(-30).join('\n');
  }

  d(...args: string[]): Promise<Run> {
    return this.di(undefined, ...args);
  }

  di(input: string | undefined, ...args: string[]): Promise<Run> {
    return run('/usr/bin/env', [`DOCKER_HOST=unix://${this.sock}`, DOCKER, ...args], { timeout: 60_000, input });
  }

  async inspect(name: string, format: string): Promise<string> {
    const r = await this.d('inspect', '-f', format, name);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  }

  /** SIGTERM, then SIGKILL after 20 s. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }

  /** Its containers go (bounded), then dockerd. */
  async end(): Promise<void> {
    if (this.proc && this.proc.exitCode === null) {
      const ids = (await this.d('ps', '-aq')).stdout.split('\n').filter(Boolean);
      if (ids.length) await this.d('rm', '-f', ...ids);
    }
    await this.stop();
  }
}

/** `ctr events` in the background: the lines so far, and a stop. */
function watchEvents(sock: string): { lines: () => string[]; stop: () => Promise<void> } {
  const p = spawn('ctr', ['--address', sock, 'events', 'namespace==moby'], { stdio: ['ignore', 'pipe', 'ignore'] });
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

/** The lines of `ctr -n moby` tasks ls or containers ls, by id. */
async function mobyRows(sock: string, what: 'tasks' | 'containers'): Promise<Map<string, string[]>> {
  const r = await ctr(sock, '-n', 'moby', what, 'ls');
  assert.equal(r.code, 0, r.stderr);
  return new Map(
    r.stdout
      .split('\n')
      .slice(1)
      .filter(Boolean)
      .map((l) => {
        const f = l.trim().split(/\s+/);
        return [f[0]!, f.slice(1)];
      }),
  );
}

/** After `ctr tasks kill -a`, what is left of the moby namespace goes (a live-restored container, a failed test). */
async function sweepMoby(sock: string): Promise<void> {
  const tasks = await mobyRows(sock, 'tasks').catch(() => new Map<string, string[]>());
  for (const id of tasks.keys()) {
    await ctr(sock, '-n', 'moby', 'tasks', 'kill', '-a', '-s', 'SIGKILL', id);
    await until(async () => (await mobyRows(sock, 'tasks')).get(id)?.[1] !== 'RUNNING', 10_000, `task ${id} stops`).catch(() => undefined);
    await ctr(sock, '-n', 'moby', 'tasks', 'delete', '-f', id);
  }
  for (const id of (await mobyRows(sock, 'containers').catch(() => new Map<string, string[]>())).keys()) await ctr(sock, '-n', 'moby', 'containers', 'delete', id);
}

/** dockerd leaves its data root bind-mounted on itself (and a live-restored container's rootfs): they go before the folder. */
function unmountUnder(dir: string): void {
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of points) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // gone meanwhile
    }
  }
}

/** A stack whose runc runtimes go to Debian's stock containerd-shim-runc-v2 instead of the shim host. */
async function stockStack(): Promise<Stack> {
  const dir = mkdtempSync('/tmp/berth-it-');
  const config = join(dir, 'stock.toml');
  writeFileSync(config, '[tasks.runtimes]\n"io.containerd.runc.v2" = "stock"\n');
  return startStack({ node: 'dk', config, dir });
}

const targets = [
  { name: 'Berth', start: async () => startStack({ node: 'dk' }) },
  { name: 'Berth with the stock shim', start: stockStack },
  { name: 'the reference containerd', start: startReference },
] as const;

for (const target of targets) {
  describe(`Docker Engine 20.10 on ${target.name}`, { skip: skip || undefined, timeout: 600_000 }, () => {
    const dir = mkdtempSync('/tmp/berth-dk-');
    let backend: Stack | Reference | undefined;
    let sock = '';
    let docker: Dockerd;
    let ready = false;

    before(async () => {
      const reg = await run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
      assert.equal(reg.code, 0, reg.stderr);
      backend = await target.start();
      if (!backend) return; // no reference here: the tests say so
      sock = backend.sock;
      docker = new Dockerd(sock, dir);
      await docker.start();
      const pull = await docker.d('pull', BB);
      assert.equal(pull.code, 0, pull.stderr);
      ready = true;
    });

    after(async () => {
      if (docker) await docker.end().catch(() => undefined);
      if (sock) await sweepMoby(sock).catch(() => undefined);
      await backend?.stop();
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    });

    const it = (name: string, fn: () => Promise<void>) =>
      test(name, async (t) => {
        if (!backend) return t.skip('no reference containerd here (../shared/testenv)');
        assert.ok(ready, 'dockerd did not start');
        await fn();
      });

    it('pull: Docker keeps the manifest in containerd\'s content store under a lease of the image', async () => {
      const digest = (await docker.inspect(BB, '{{index .RepoDigests 0}}')).split('@')[1]!;
      const image = await docker.inspect(BB, '{{.Id}}');
      const content = await ctr(sock, '-n', 'moby', 'content', 'ls');
      assert.match(content.stdout, new RegExp(`^${digest}\\s.*containerd\\.io/distribution\\.source\\.${registry.replace(/\./g, '\\.')}=library/busybox`, 'm'));
      const leases = await ctr(sock, '-n', 'moby', 'leases', 'ls');
      assert.match(leases.stdout, new RegExp(`^moby-image-${image}\\s`, 'm'));
    });

    it('run --rm passes output and the exit code through, and leaves nothing in ctr -n moby', async () => {
      const r = await docker.d('run', '--rm', '--network', 'none', BB, 'sh', '-c', 'echo out; echo err >&2; exit 3');
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, 'out\n');
      assert.match(r.stderr, /^err$/m);
      const ok = await docker.d('run', '--rm', '--network', 'none', BB, 'true');
      assert.equal(ok.code, 0, ok.stderr);
      await until(async () => (await mobyRows(sock, 'containers')).size === 0, 10_000, 'the removed containers are gone from ctr -n moby containers ls');
      assert.equal((await mobyRows(sock, 'tasks')).size, 0);
    });

    it('run -i: stdin reaches the container, and its end is an EOF', async () => {
      const r = await docker.di('hello\nworld\n', 'run', '--rm', '-i', '--network', 'none', BB, 'sh', '-c', 'cat; echo done');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'hello\nworld\ndone\n');
    });

    it('run -t: the container gets a terminal; output and exit code come through it', async () => {
      const r = await docker.d('run', '--rm', '-t', '--network', 'none', BB, 'sh', '-c', 'tty; echo two; exit 2');
      assert.equal(r.code, 2, r.stderr);
      // the terminal's line discipline turns each \n into \r\n
      assert.match(r.stdout, /^\/dev\/pts\/\d+\r\ntwo\r\n$/);
    });

    it('-d, exec, top, pause/unpause, inspect, logs, stop, start, kill; ctr -n moby shows a rootfs-path container', async () => {
      const cmd = 'echo started; trap "echo term; exit 7" TERM; while true; do sleep 0.2; done';
      const r = await docker.d('run', '-d', '--name', 'c1', '--network', 'none', BB, 'sh', '-c', cmd);
      assert.equal(r.code, 0, r.stderr);
      const id = r.stdout.trim();
      assert.equal(await docker.inspect('c1', '{{.State.Status}}'), 'running');
      const pid = Number(await docker.inspect('c1', '{{.State.Pid}}'));
      assert.ok(pid > 0);

      // what containerd holds for Docker: a container with no snapshot, the runc v2 runtime with options, the task
      const containers = await mobyRows(sock, 'containers');
      assert.deepEqual(containers.get(id), ['-', 'io.containerd.runc.v2']);
      const info = JSON.parse((await ctr(sock, '-n', 'moby', 'containers', 'info', id)).stdout);
      assert.equal(info.SnapshotKey ?? '', '');
      assert.equal(info.Snapshotter ?? '', '');
      assert.match(info.Spec.root.path, new RegExp(`^${dir}/docker/overlay2/[0-9a-f]+/merged$`));
      assert.match(info.Runtime.Options.type_url ?? info.Runtime.Options['@type'] ?? '', /containerd\.runc\.v1\.Options$/);
      assert.deepEqual((await mobyRows(sock, 'tasks')).get(id), [String(pid), 'RUNNING']);
      // the runc options Docker sent (an Any) were honoured: runc keeps its state under their root
      assert.ok(existsSync(join(dir, 'exec', 'runtime-runc', 'moby', id)), 'runc state under the root of the runc options');

      const ex = await docker.d('exec', 'c1', 'sh', '-c', 'echo in-exec; exit 4');
      assert.equal(ex.code, 4, ex.stderr);
      assert.equal(ex.stdout, 'in-exec\n');
      const top = await docker.d('top', 'c1');
      assert.equal(top.code, 0, top.stderr);
      assert.match(top.stdout, new RegExp(`^root\\s+${pid}\\s.*sh -c echo started`, 'm'));

      assert.equal((await docker.d('pause', 'c1')).code, 0);
      assert.equal(await docker.inspect('c1', '{{.State.Status}} {{.State.Paused}}'), 'paused true');
      assert.equal((await mobyRows(sock, 'tasks')).get(id)?.[1], 'PAUSED');
      assert.equal((await docker.d('unpause', 'c1')).code, 0);
      assert.equal(await docker.inspect('c1', '{{.State.Status}} {{.State.Paused}}'), 'running false');

      // stop: SIGTERM, which the container traps; Docker learns of the exit from /tasks/exit alone
      const stop = await docker.d('stop', 'c1');
      assert.equal(stop.code, 0, stop.stderr);
      assert.equal(await docker.inspect('c1', '{{.State.Status}} {{.State.ExitCode}}'), 'exited 7');
      assert.equal((await docker.d('logs', 'c1')).stdout, 'started\nterm\n');
      assert.equal((await mobyRows(sock, 'tasks')).has(id), false);

      assert.equal((await docker.d('start', 'c1')).code, 0);
      assert.equal(await docker.inspect('c1', '{{.State.Status}}'), 'running');
      assert.equal((await docker.d('kill', 'c1')).code, 0);
      await until(async () => (await docker.inspect('c1', '{{.State.Status}}')) === 'exited', 10_000, 'killed container exited');
      assert.equal(await docker.inspect('c1', '{{.State.ExitCode}}'), '137');
      assert.equal((await docker.d('rm', 'c1')).code, 0);
      assert.equal((await mobyRows(sock, 'containers')).has(id), false);
    });

    it('an OOM-killed container is OOMKilled: /tasks/oom comes before /tasks/exit', async () => {
      const events = watchEvents(sock);
      await sleep(300);
      try {
        const hog = 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo ${#x}';
        const r = await docker.d('run', '--name', 'oom', '--memory', '32m', '--memory-swap', '32m', '--network', 'none', BB, 'sh', '-c', hog);
        assert.equal(r.code, 137, r.stderr);
        assert.equal(await docker.inspect('oom', '{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}'), 'exited 137 true');
        const id = await docker.inspect('oom', '{{.Id}}');
        await until(async () => events.lines().some((l) => l.includes('/tasks/exit') && l.includes(id)), 5000, 'the exit event');
        const mine = events.lines().filter((l) => l.includes(id));
        const oom = mine.findIndex((l) => l.includes('/tasks/oom'));
        const exit = mine.findIndex((l) => l.includes('/tasks/exit'));
        assert.ok(oom >= 0 && oom < exit, mine.join('\n'));
      } finally {
        await events.stop();
        await docker.d('rm', '-f', 'oom');
      }
    });

    it('--restart on-failure:2 restarts twice on the exit events', async () => {
      const r = await docker.d('run', '-d', '--name', 'r1', '--restart', 'on-failure:2', '--network', 'none', BB, 'sh', '-c', 'sleep 0.3; exit 5');
      assert.equal(r.code, 0, r.stderr);
      await until(async () => (await docker.inspect('r1', '{{.State.Status}} {{.RestartCount}}')) === 'exited 2', 30_000, 'two restarts, then exited');
      assert.equal(await docker.inspect('r1', '{{.State.ExitCode}}'), '5');
      await docker.d('rm', '-f', 'r1');
    });

    it('update changes a running container\'s memory limit', async () => {
      assert.equal((await docker.d('run', '-d', '--name', 'u1', '--network', 'none', BB, 'sleep', '100')).code, 0);
      try {
        const up = await docker.d('update', '--memory', '64m', '--memory-swap', '64m', 'u1');
        assert.equal(up.code, 0, up.stderr);
        const limit = await docker.d('exec', 'u1', 'sh', '-c', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max');
        assert.equal(limit.stdout.trim(), String(64 << 20));
      } finally {
        await docker.d('rm', '-f', 'u1');
      }
    });

    it('--live-restore: a running container is found again after dockerd restarts; one that exited meanwhile is reported exited', async () => {
      await docker.stop();
      await docker.start(['--live-restore']);
      const cmd = 'i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done';
      assert.equal((await docker.d('run', '-d', '--name', 'lr', '--network', 'none', BB, 'sh', '-c', cmd)).code, 0);
      assert.equal((await docker.d('run', '-d', '--name', 'lr2', '--network', 'none', BB, 'sh', '-c', 'sleep 1; exit 9')).code, 0);
      const pid = Number(await docker.inspect('lr', '{{.State.Pid}}'));
      await docker.stop();
      await sleep(1500); // lr2 exits while no dockerd listens
      await docker.start(['--live-restore']);
      assert.equal(await docker.inspect('lr', '{{.State.Status}} {{.State.Pid}}'), `running ${pid}`);
      await until(async () => (await docker.inspect('lr2', '{{.State.Status}} {{.State.ExitCode}}')) === 'exited 9', 10_000, 'lr2 reported exited 9');
      // the restored container's events still reach the new dockerd
      assert.equal((await docker.d('stop', '-t', '1', 'lr')).code, 0);
      assert.equal(await docker.inspect('lr', '{{.State.Status}} {{.State.ExitCode}}'), 'exited 137');
      await docker.d('rm', '-f', 'lr', 'lr2');
    });
  });
}
