// Pull+unpack of the local registry's 200 MB `big` image, three ways in one run: `ctr images pull`
// against Berth, `berth pull` (the images service's server-side pull), `ctr images pull` against
// the reference containerd 1.6.20. Each sample on a fresh stack or daemon (fresh roots: nothing of
// the image on the node), interleaved; prints the medians and the ratio to the reference.
//   node bench/pull.mjs [RUNS]      (RUNS default 3; REGISTRY=host:port, default 127.0.0.1:5000)
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { repo, startBerth, startReference } from './lib.mjs';

const runs = Number(process.argv[2] ?? 3);
const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const image = `${registry}/library/big:latest`;

function timed(cmd, args) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    execFile(cmd, args, { maxBuffer: 64 << 20, timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`));
      else resolve(performance.now() - t0);
    });
  });
}

const ways = {
  'ctr pull → Berth': async () => {
    const b = await startBerth();
    try {
      return await timed('ctr', ['-a', b.sock, '-n', 'bench', 'images', 'pull', '--plain-http', image]);
    } finally {
      await b.stop();
    }
  },
  'berth pull': async () => {
    const b = await startBerth();
    try {
      return await timed(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'pull', '-a', b.sock, '-n', 'bench', '--plain-http', image]);
    } finally {
      await b.stop();
    }
  },
  'ctr pull → containerd 1.6.20': async () => {
    const r = startReference();
    if (!r) throw new Error('no reference containerd (../shared/testenv)');
    try {
      return await timed('ctr', ['-a', r.sock, '-n', 'bench', 'images', 'pull', '--plain-http', image]);
    } finally {
      r.stop();
    }
  },
};

const samples = Object.fromEntries(Object.keys(ways).map((k) => [k, []]));
for (let i = 0; i < runs; i++) {
  for (const [name, fn] of Object.entries(ways)) {
    const ms = await fn();
    samples[name].push(ms);
    console.error(`run ${i + 1}/${runs} ${name}: ${ms.toFixed(0)} ms`);
  }
}
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const ref = median(samples['ctr pull → containerd 1.6.20']);
console.log(`pull+unpack of ${image} (≈200 MB, 6 layers), ${runs} runs each, fresh roots; wall time of the client command`);
console.log('| way | median | min | max | reference ÷ this |');
console.log('| --- | --- | --- | --- | --- |');
for (const [name, v] of Object.entries(samples)) {
  const m = median(v);
  console.log(`| ${name} | ${(m / 1000).toFixed(2)} s | ${(Math.min(...v) / 1000).toFixed(2)} s | ${(Math.max(...v) / 1000).toFixed(2)} s | ${(ref / m).toFixed(2)}× |`);
}
