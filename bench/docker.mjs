// `docker run --rm --network none busybox true` latency with Docker Engine 20.10 (Debian's
// docker.io) on Berth and on the reference containerd, in one run: one dockerd per backend (its
// own data and exec roots), a few warm-up runs each, then the samples alternating between them.
// usage: node bench/docker.mjs [RUNS]   (needs root, docker.io, runc and the local registry)
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { repo, startBerth, startReference, pct } from './lib.mjs';

const RUNS = Number(process.argv[2] ?? 30);
const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const BB = `${registry}/library/busybox:latest`;
const DOCKER = '/usr/bin/docker';

if (!existsSync('/usr/sbin/dockerd') || !existsSync(DOCKER)) {
  console.error('docker.io is not installed (apt-get install -y docker.io)');
  process.exit(2);
}
execFileSync(join(repo, '..', 'shared', 'testenv', 'registry.sh'), ['start'], { stdio: 'ignore' });

function docker(sock, args) {
  return new Promise((res) => {
    const t0 = performance.now();
    const p = spawn(DOCKER, args, { env: { ...process.env, DOCKER_HOST: `unix://${sock}` }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (b) => (err += b));
    p.once('exit', (code) => res({ code, err, ms: performance.now() - t0 }));
  });
}

async function startDockerd(containerd) {
  const dir = mkdtempSync('/tmp/berth-bdk-');
  const sock = join(dir, 'docker.sock');
  const log = openSync(join(dir, 'dockerd.log'), 'a');
  const proc = spawn('/usr/sbin/dockerd', [
    `--containerd=${containerd}`, '--data-root', join(dir, 'docker'), '--exec-root', join(dir, 'exec'), '--pidfile', join(dir, 'docker.pid'),
    '-H', `unix://${sock}`, '--bridge=none', '--iptables=false', '--ip-masq=false', '--ip6tables=false', '--insecure-registry', registry,
  ], { stdio: ['ignore', log, log] });
  for (let i = 0; i < 120 && (await docker(sock, ['version'])).code !== 0; i++) await new Promise((r) => setTimeout(r, 500));
  const pull = await docker(sock, ['pull', BB]);
  if (pull.code !== 0) throw new Error(`docker pull: ${pull.err}`);
  return {
    sock,
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
      // dockerd leaves its data root bind-mounted on itself
      const points = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir)).sort((a, b) => b.length - a.length);
      for (const m of points) try { execFileSync('umount', ['-l', m]); } catch { /* gone */ }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Berth's shim host outlives the stack by design: the bench ends the one its stack started. */
function endShimHost(stackDir) {
  const state = join(stackDir, 'state', 'shim');
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('host');
      if (i > 0 && argv[i + 1] === '--state' && argv[i + 2] === state) process.kill(Number(d), 'SIGKILL');
    } catch { /* gone */ }
  }
}

const berth = await startBerth();
const ref = startReference();
const sides = [{ name: 'berth', dockerd: await startDockerd(berth.sock), ms: [] }];
if (ref) sides.push({ name: 'reference', dockerd: await startDockerd(ref.sock), ms: [] });
try {
  const args = ['run', '--rm', '--network', 'none', BB, 'true'];
  for (const s of sides) for (let i = 0; i < 3; i++) await docker(s.dockerd.sock, args);
  for (let i = 0; i < RUNS; i++) {
    for (const s of i % 2 ? [...sides].reverse() : sides) {
      const r = await docker(s.dockerd.sock, args);
      if (r.code !== 0) throw new Error(`${s.name}: docker run exited ${r.code}: ${r.err}`);
      s.ms.push(r.ms);
    }
  }
  const med = (s) => pct(s.ms, 0.5);
  for (const s of sides) console.log(`${s.name.padEnd(10)} docker run --rm busybox true: median ${med(s).toFixed(0)} ms, p95 ${pct(s.ms, 0.95).toFixed(0)} ms (${s.ms.length} runs)`);
  if (sides.length === 2) console.log(`berth / reference (median): ${(med(sides[0]) / med(sides[1])).toFixed(2)}`);
} finally {
  for (const s of sides) await s.dockerd.stop().catch(() => undefined);
  await berth.stop();
  endShimHost(berth.dir);
  ref?.stop();
}
