// Memory benchmark: the idle RSS and PSS (/proc/<pid>/smaps_rollup) of every Berth process and of
// the reference containerd in the same run; then RSS and heap (inside each process, after full
// collections) before and after 10,000 unary calls (16 in flight; a quarter of them namespace
// updates) and 100 streams opened and closed (Events.Subscribe cancelled, Content.Read of a small
// blob, Snapshots.List), the same load on the reference. PSS counts shared pages (Node's own
// code, RocksDB's library) once across all processes: summed, it is what the stack costs the
// machine; RSS counts them in every process.
// Run: node bench/memory.mjs [CALLS=10000]
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from '@nats-io/transport-node';
import { codec } from '@berth/api';
import { heapSubject } from '@berth/bus';
import { serviceNodeArgs } from '../packages/kit/dist/nodeargs.js';
import { berthProcesses, client, meta, repo, startBerth, startReference, toBuf } from './lib.mjs';

const CALLS = Number(process.argv[2] ?? 10_000);
const STREAMS = 100;
const ns = 'bench-mem';
const id = (b) => b;
const mb = (kb) => (kb / 1024).toFixed(1);

/** RSS and PSS in KiB, from smaps_rollup; undefined once the process is gone. */
function mem(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const f = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)[1]);
    return { rss: f('Rss'), pss: f('Pss'), anon: f('Anonymous') };
  } catch {
    return undefined;
  }
}

/**
 * A Node process running `code` (with the service processes' node flags), measured after 5 s idle:
 * what a service costs before any of its own code.
 */
async function floorProcess(code) {
  const child = spawn(process.execPath, [...serviceNodeArgs, '--input-type=module', '-e', `${code}; setInterval(() => {}, 1 << 30);`], { cwd: repo + '/bench', stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 5000));
  const m = mem(child.pid);
  child.kill();
  return m;
}

const natsFloor = (url, cred) => `
  const { connect, nkeyAuthenticator } = await import('@nats-io/transport-node');
  await connect({ servers: ${JSON.stringify(url)}, authenticator: nkeyAuthenticator(new TextEncoder().encode(${JSON.stringify(cred.nkey_seed)})), inboxPrefix: ${JSON.stringify(cred.inbox_prefix)} });`;

const blob = Buffer.from('memory bench blob\n'.repeat(64));
const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex');
const C = (m) => codec(m);
const unaries = [
  ['/containerd.services.namespaces.v1.Namespaces/List', 'containerd.services.namespaces.v1.ListNamespacesRequest', {}],
  ['/containerd.services.content.v1.Content/Info', 'containerd.services.content.v1.InfoRequest', { digest }],
  ['/containerd.services.leases.v1.Leases/List', 'containerd.services.leases.v1.ListRequest', {}],
  ['/containerd.services.images.v1.Images/List', 'containerd.services.images.v1.ListImagesRequest', {}],
  ['/containerd.services.containers.v1.Containers/List', 'containerd.services.containers.v1.ListContainersRequest', {}],
  ['/containerd.services.snapshots.v1.Snapshots/Stat', 'containerd.services.snapshots.v1.StatSnapshotRequest', { snapshotter: 'overlayfs', key: 'no-such-key' }],
  ['/containerd.services.tasks.v1.Tasks/List', 'containerd.services.tasks.v1.ListTasksRequest', {}],
  ['/containerd.services.version.v1.Version/Version', 'google.protobuf.Empty', {}],
].map(([path, type, req]) => [path, toBuf(C(type).encode(req))]);
// every fourth call writes: a namespace label (a store commit and an event)
const U = C('containerd.services.namespaces.v1.UpdateNamespaceRequest');
const update = (i) => ['/containerd.services.namespaces.v1.Namespaces/Update', toBuf(U.encode({ namespace: { name: ns, labels: { mem: String(i) } }, update_mask: { paths: ['labels.mem'] } }))];
const streams = [
  ['/containerd.services.events.v1.Events/Subscribe', toBuf(C('containerd.services.events.v1.SubscribeRequest').encode({ filters: ['topic=="/bench/none"'] })), 200],
  ['/containerd.services.content.v1.Content/Read', toBuf(C('containerd.services.content.v1.ReadContentRequest').encode({ digest }))],
  ['/containerd.services.snapshots.v1.Snapshots/List', toBuf(C('containerd.services.snapshots.v1.ListSnapshotsRequest').encode({ snapshotter: 'overlayfs' }))],
];

async function writeBlob(c) {
  // held by a lease: unleased content would be collected while the streams read it
  const L = C('containerd.services.leases.v1.CreateRequest');
  await new Promise((resolve) => c.makeUnaryRequest('/containerd.services.leases.v1.Leases/Create', id, id, toBuf(L.encode({ id: 'bench-mem' })), meta(ns), () => resolve()));
  const md = meta(ns);
  md.set('containerd-lease', 'bench-mem');
  const W = C('containerd.services.content.v1.WriteContentRequest');
  return new Promise((resolve, reject) => {
    const call = c.makeBidiStreamRequest('/containerd.services.content.v1.Content/Write', id, id, md);
    call.on('data', () => undefined);
    call.on('error', (e) => (e.code === 6 ? resolve() : reject(e))); // AlreadyExists: there from an earlier run
    call.on('end', resolve);
    call.write(toBuf(W.encode({ action: 'COMMIT', ref: 'bench-mem', total: blob.length, expected: digest, offset: 0, data: blob })));
    call.end();
  });
}

function unary(c, path, bytes) {
  // NotFound (Snapshots.Stat of no key) is an answer like any other
  return new Promise((resolve, reject) => c.makeUnaryRequest(path, id, id, bytes, meta(ns), (e) => (e && e.code !== 5 ? reject(e) : resolve())));
}

function stream(c, path, bytes, cancelMs) {
  return new Promise((resolve, reject) => {
    const s = c.makeServerStreamRequest(path, id, id, bytes, meta(ns));
    let timer;
    const cancel = () => { clearTimeout(timer); s.cancel(); };
    if (cancelMs !== undefined) { timer = setTimeout(cancel, cancelMs); s.on('metadata', cancel); }
    s.on('data', () => undefined);
    s.on('error', (e) => (e.code === 1 && cancelMs !== undefined ? resolve() : reject(e)));
    s.on('end', () => { clearTimeout(timer); resolve(); });
  });
}

async function load(sock, calls, opened) {
  const c = client(sock);
  await writeBlob(c);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 16 }, async () => {
    for (let i = next++; i < calls; i = next++) await unary(c, ...(i % 4 === 1 ? update(i) : unaries[i % unaries.length]));
  }));
  const s = (performance.now() - t0) / 1000;
  next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let i = next++; i < opened; i = next++) await stream(c, ...streams[i % streams.length]);
  }));
  c.close();
  return calls / s;
}

async function heaps(nc, node, names) {
  const out = {};
  for (const n of names) {
    try {
      out[n] = JSON.parse((await nc.request(heapSubject(node, n), '', { timeout: 20_000 })).string());
    } catch { /* not a service process: nats-server, the supervisor */ }
  }
  return out;
}

// the heap figures are asked of each process; nothing answers unless this is set
process.env.BERTH_DEBUG_HEAP = '1';
const berth = await startBerth();
const ref = startReference();
try {
  await new Promise((r) => setTimeout(r, 5000)); // settle: start-up work done, nothing running
  const procs = berthProcesses(join(berth.dir, 'state'));
  const names = Object.keys(procs);
  const cred = JSON.parse(readFileSync(join(berth.dir, 'root', 'nats', 'creds', 'gateway.json'), 'utf8'));
  const nc = await connect({ servers: berth.natsUrl, authenticator: nkeyAuthenticator(new TextEncoder().encode(cred.nkey_seed)), inboxPrefix: cred.inbox_prefix });

  const idle = Object.fromEntries(names.map((n) => [n, mem(procs[n])]));
  const refIdle = ref && mem(ref.pid);
  // the floor of a service process: Node idle, and Node with nats.js connected to this stack
  const floors = await Promise.all([floorProcess(''), floorProcess(natsFloor(berth.natsUrl, cred))]);
  // file-backed pages (Node's binary, RocksDB's library) are the same pages in every process:
  // RSS counts them in each, PSS shares them out
  console.log('idle, MiB (file = RSS backed by files: the node binary and libraries, shared)');
  console.log('| process | RSS | PSS | file | anon |\n| --- | --- | --- | --- | --- |');
  const row = (n, m) => console.log(`| ${n} | ${mb(m.rss)} | ${mb(m.pss)} | ${mb(m.rss - m.anon)} | ${mb(m.anon)} |`);
  for (const n of names) row(n, idle[n]);
  const sum = (o, k) => Object.values(o).reduce((a, x) => a + (x?.[k] ?? 0), 0);
  console.log(`| Berth, all processes | ${mb(sum(idle, 'rss'))} | ${mb(sum(idle, 'pss'))} | | |`);
  if (refIdle) row('reference containerd', refIdle);
  row('floor: node, idle', floors[0]);
  row('floor: node + nats.js connected', floors[1]);
  const services = names.filter((n) => n !== 'berth' && n !== 'nats-server');
  const svcRss = services.map((n) => idle[n].rss).sort((a, b) => a - b);
  console.log(`\nservice processes idle RSS: median ${mb(svcRss[svcRss.length >> 1])}, max ${mb(svcRss.at(-1))} MiB`);

  const h0 = await heaps(nc, 'bench', services);
  const m0 = Object.fromEntries(names.map((n) => [n, mem(procs[n])]));
  const rate = await load(berth.sock, CALLS, STREAMS);
  const h1 = await heaps(nc, 'bench', services);
  const m1 = Object.fromEntries(names.map((n) => [n, mem(procs[n])]));
  const r0 = ref && mem(ref.pid);
  const refRate = ref && await load(ref.sock, CALLS, STREAMS);
  const r1 = ref && mem(ref.pid);
  console.log(`\n${CALLS} unary calls (16 in flight; Berth ${rate.toFixed(0)}/s${ref ? `, reference ${refRate.toFixed(0)}/s` : ''}) and ${STREAMS} streams opened and closed; heap after full collections, MiB`);
  console.log('| process | RSS before | RSS after | heap before | heap after | heap growth |\n| --- | --- | --- | --- | --- | --- |');
  const f = (x) => (x / 2 ** 20).toFixed(1);
  for (const n of names) {
    const hb = h0[n], ha = h1[n];
    console.log(`| ${n} | ${mb(m0[n].rss)} | ${mb(m1[n]?.rss ?? 0)} | ${hb ? f(hb.heapUsed) : '-'} | ${ha ? f(ha.heapUsed) : '-'} | ${hb && ha ? f(ha.heapUsed - hb.heapUsed) : '-'} |`);
  }
  if (ref) console.log(`| reference containerd | ${mb(r0.rss)} | ${mb(r1.rss)} | - | - | - |`);
  await nc.close();
} finally {
  await berth.stop();
  ref?.stop();
}
