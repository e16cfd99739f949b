// Snapshots benchmark: per-call latency (p50/p99) of Prepare, Mounts, Stat, Usage, Commit and
// Remove through the gRPC socket, and the time to stack a 128-layer chain, Berth against the
// reference containerd in the same run. Run: node bench/snapshot.mjs [N]
import { codec } from '@berth/api';
import { client, meta, pct, peakRssMb, berthProcesses, startBerth, startReference, unary } from './lib.mjs';

const N = Number(process.argv[2] ?? 200);
const ns = 'bench';
const S = (m) => `/containerd.services.snapshots.v1.Snapshots/${m}`;
const req = (m) => codec(`containerd.services.snapshots.v1.${m}`);
// the reference collects what no root or lease holds (after 100 mutations): keep everything rooted
const root = { 'containerd.io/gc.root': 'bench' };
const call = (c, m, type, body) => unary(c, S(m), req(type).encode({ snapshotter: 'overlayfs', ...(m === 'Prepare' || m === 'Commit' ? { labels: root } : {}), ...body }), meta(ns));

async function measure(sock) {
  const c = client(sock);
  const lat = { Prepare: [], Mounts: [], Stat: [], Usage: [], Commit: [], Remove: [] };
  const timed = async (m, type, body) => {
    const t0 = process.hrtime.bigint();
    await call(c, m, type, body);
    lat[m].push(Number(process.hrtime.bigint() - t0) / 1e6);
  };
  // a 128-layer chain, as a deep image unpacks
  const t0 = Date.now();
  let parent = '';
  for (let i = 0; i < 128; i++) {
    await call(c, 'Prepare', 'PrepareSnapshotRequest', { key: `chain-a${i}`, parent });
    await call(c, 'Commit', 'CommitSnapshotRequest', { key: `chain-a${i}`, name: `chain-${i}` });
    parent = `chain-${i}`;
  }
  const chainMs = Date.now() - t0;
  for (let i = 0; i < N; i++) {
    await timed('Prepare', 'PrepareSnapshotRequest', { key: `a${i}`, parent });
    await timed('Mounts', 'MountsRequest', { key: `a${i}` });
    await timed('Stat', 'StatSnapshotRequest', { key: `a${i}` });
    await timed('Usage', 'UsageRequest', { key: `a${i}` });
    await timed('Commit', 'CommitSnapshotRequest', { key: `a${i}`, name: `c${i}` });
    await timed('Remove', 'RemoveSnapshotRequest', { key: `c${i}` });
  }
  for (let i = 127; i >= 0; i--) await call(c, 'Remove', 'RemoveSnapshotRequest', { key: `chain-${i}` });
  c.close();
  return { chainMs, lat };
}

const berth = await startBerth();
const ref = startReference();
try {
  const rows = [['', 'Berth', ...(ref ? ['reference'] : [])]];
  const b = await measure(berth.sock);
  const r = ref ? await measure(ref.sock) : undefined;
  rows.push(['128-layer chain (prepare+commit each)', `${b.chainMs} ms`, ...(r ? [`${r.chainMs} ms`] : [])]);
  for (const m of Object.keys(b.lat)) {
    const f = (x) => `${pct(x.lat[m], 0.5).toFixed(2)} / ${pct(x.lat[m], 0.99).toFixed(2)} ms`;
    rows.push([`${m} p50 / p99`, f(b), ...(r ? [f(r)] : [])]);
  }
  const procs = berthProcesses(`${berth.dir}/state`);
  rows.push(['peak RSS (snapshot service / containerd)', `${peakRssMb(procs.snapshot)} MiB`, ...(ref ? [`${peakRssMb(ref.pid)} MiB`] : [])]);
  for (const row of rows) console.log(row.map((x, i) => (i ? x.padStart(22) : x.padEnd(42))).join(''));
} finally {
  await berth.stop();
  ref?.stop();
}
