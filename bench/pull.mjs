// Pull+unpack of the local registry's 200 MB `big` image, three ways in one run: `ctr images pull`
// against Berth, `berth pull` (the images service's server-side pull), `ctr images pull` against
// the reference containerd 1.6.20. Each sample on a fresh stack or daemon (fresh roots: nothing of
// the image on the node), interleaved; prints the medians and the ratio to the reference, and the
// CPU seconds each way used (the client's, plus the daemon's: every Berth process or containerd),
// which move much less than wall time on a machine shared with other work.
//   node bench/pull.mjs [RUNS]      (RUNS default 3; REGISTRY=host:port, default 127.0.0.1:5000)
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { berthProcesses, repo, startBerth, startReference } from './lib.mjs';

const runs = Number(process.argv[2] ?? 3);
const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const image = `${registry}/library/big:latest`;

const hz = 100; // USER_HZ: /proc's clock ticks
/** utime+stime of a process (self: 13,14) or of its waited-for children (15,16), in seconds */
function cpuOf(pid, children = false) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return children ? (Number(f[13]) + Number(f[14])) / hz : (Number(f[11]) + Number(f[12])) / hz;
  } catch {
    return 0; // gone
  }
}
const cpuSum = (pids) => pids.reduce((n, p) => n + cpuOf(p), 0);

/** Wall ms of the command, and the CPU seconds it and `daemon()`'s processes used meanwhile. */
function timed(cmd, args, daemon) {
  return new Promise((resolve, reject) => {
    const pids = daemon();
    const d0 = cpuSum(pids);
    const c0 = cpuOf(process.pid, true);
    const t0 = performance.now();
    execFile(cmd, args, { maxBuffer: 64 << 20, timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`));
      else resolve({ ms: performance.now() - t0, cpu: cpuOf(process.pid, true) - c0 + cpuSum(pids) - d0 });
    });
  });
}

const ways = {
  'ctr pull → Berth': async () => {
    const b = await startBerth();
    try {
      return await timed('ctr', ['-a', b.sock, '-n', 'bench', 'images', 'pull', '--plain-http', image], () => Object.values(berthProcesses(join(b.dir, 'state'))));
    } finally {
      await b.stop();
    }
  },
  'berth pull': async () => {
    const b = await startBerth();
    try {
      return await timed(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'pull', '-a', b.sock, '-n', 'bench', '--plain-http', image], () => Object.values(berthProcesses(join(b.dir, 'state'))));
    } finally {
      await b.stop();
    }
  },
  'ctr pull → containerd 1.6.20': async () => {
    const r = startReference();
    if (!r) throw new Error('no reference containerd (../shared/testenv)');
    try {
      return await timed('ctr', ['-a', r.sock, '-n', 'bench', 'images', 'pull', '--plain-http', image], () => [r.pid]);
    } finally {
      r.stop();
    }
  },
};

const samples = Object.fromEntries(Object.keys(ways).map((k) => [k, []]));
const cpu = Object.fromEntries(Object.keys(ways).map((k) => [k, []]));
for (let i = 0; i < runs; i++) {
  for (const [name, fn] of Object.entries(ways)) {
    const r = await fn();
    samples[name].push(r.ms);
    cpu[name].push(r.cpu);
    console.error(`run ${i + 1}/${runs} ${name}: ${r.ms.toFixed(0)} ms, ${r.cpu.toFixed(2)} s CPU`);
  }
}
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const refName = 'ctr pull → containerd 1.6.20';
const ref = median(samples[refName]);
const refCpu = median(cpu[refName]);
console.log(`pull+unpack of ${image} (≈200 MB, 6 layers), ${runs} runs each, fresh roots; wall time of the client command; CPU of the client and the daemon's processes`);
console.log('| way | median | min | max | reference ÷ this | CPU (median) | reference CPU ÷ this |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const [name, v] of Object.entries(samples)) {
  const m = median(v);
  const c = median(cpu[name]);
  console.log(`| ${name} | ${(m / 1000).toFixed(2)} s | ${(Math.min(...v) / 1000).toFixed(2)} s | ${(Math.max(...v) / 1000).toFixed(2)} s | ${(ref / m).toFixed(2)}× | ${c.toFixed(2)} s | ${(refCpu / c).toFixed(2)}× |`);
}
