// Pull + unpack of the local registry's 200 MB `big` image with the real ctr, against Berth and
// the reference containerd in the same run, alternating. Each pull goes to a fresh namespace, so
// every run fetches the blobs and applies every layer. Prints the wall time of the pull, the
// unpack time ctr reports, and the peak RSS of the processes doing the work.
// usage: node bench/unpack.mjs [RUNS=3]
import { execFileSync, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { berthProcesses, peakRssMb, repo, startBerth, startReference } from './lib.mjs';

const runs = Number(process.argv[2] ?? 3);
const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const image = `${registry}/library/big:latest`;
execFileSync(resolve(repo, '..', 'shared', 'testenv', 'registry.sh'), ['start'], { stdio: 'inherit' });

const berth = await startBerth();
const ref = startReference();
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

function pull(sock, ns) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('ctr', ['--address', sock, '-n', ns, 'images', 'pull', '--plain-http', image], { encoding: 'utf8' });
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`pull on ${sock}: ${r.stderr}`);
  const m = /done: ([\d.]+)(ms|s)/.exec(r.stdout);
  const unpack = m ? Number(m[1]) * (m[2] === 's' ? 1000 : 1) : NaN;
  return { wall, unpack };
}

const results = { berth: [], reference: [] };
try {
  for (let i = 0; i < runs; i++) {
    results.berth.push(pull(berth.sock, `bench-unpack-${process.pid}-${i}`));
    if (ref) results.reference.push(pull(ref.sock, `bench-unpack-${process.pid}-${i}`));
  }
  const procs = berthProcesses(`${berth.dir}/state`);
  const row = (name, rs, rss) =>
    console.log(`${name.padEnd(10)} pull+unpack ${median(rs.map((r) => r.wall)).toFixed(0).padStart(6)} ms   unpack (ctr) ${median(rs.map((r) => r.unpack)).toFixed(0).padStart(6)} ms   peak RSS ${rss}`);
  console.log(`big image, ${runs} runs each, medians`);
  row('berth', results.berth, `diff ${peakRssMb(procs.diff)} MiB, content ${peakRssMb(procs.content)} MiB, snapshot ${peakRssMb(procs.snapshot)} MiB`);
  if (ref) row('reference', results.reference, `containerd ${peakRssMb(ref.pid)} MiB`);
  if (ref) {
    const ratio = median(results.berth.map((r) => r.unpack)) / median(results.reference.map((r) => r.unpack));
    console.log(`unpack time berth/reference: ${ratio.toFixed(2)}`);
  }
} finally {
  ref?.stop();
  await berth.stop();
}
