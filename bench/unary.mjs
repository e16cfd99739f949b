// Unary benchmark: a call the gateway forwards over the bus (Leases.List: the gateway's read
// cache keeps no lease answers), one it answers from that cache (Namespaces.List, see
// services/gateway/README.md) and one it answers itself (Version), Berth against the reference
// containerd in the same run, with the CPU the server side spends per call (gateway + leases +
// nats-server, or containerd); and for context the floors, one bare NATS request/reply between
// two Node processes and node:http2 answering alone.
// Run: node bench/unary.mjs [N]
import { spawn } from 'node:child_process';
import { connect } from '@nats-io/transport-node';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { berthProcesses, client, meta, pct, printRows, startBerth, startReference, unary } from './lib.mjs';

const N = Number(process.argv[2] ?? 2000);
const LIST = '/containerd.services.leases.v1.Leases/List';
const KEPT = '/containerd.services.namespaces.v1.Namespaces/List';
const VERSION = '/containerd.services.version.v1.Version/Version';
const empty = new Uint8Array();

async function latency(sock, path, n = N) {
  const c = client(sock);
  for (let i = 0; i < 200; i++) await unary(c, path, empty, meta('default')); // warm-up: connection, JIT
  const lat = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await unary(c, path, empty, meta('default'));
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  c.close();
  return lat;
}

/** CPU ms (user + system) a process has used so far */
function cpuMs(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}

async function rate(sock, path, pids, inflight = 8, total = 5 * N) {
  const c = client(sock);
  for (let i = 0; i < 200; i++) await unary(c, path, empty, meta('default'));
  let next = 0;
  const cpu0 = pids.map(cpuMs);
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (next < total) { next++; await unary(c, path, empty, meta('default')); }
  }));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const each = pids.map((p, i) => Math.round(((cpuMs(p) - cpu0[i]) * 1000) / total));
  c.close();
  return { perS: Math.round(total / s), cpuUs: each.reduce((a, b) => a + b, 0), each };
}

// the floor: a responder in another Node process, requests one at a time from this one
async function floor() {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const srv = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  const url = `nats://127.0.0.1:${port}`;
  const responder = `
    const { connect } = await import('@nats-io/transport-node');
    for (;;) { try { const nc = await connect({ servers: '${url}' }); nc.subscribe('floor', { callback: (_e, m) => m.respond(m.data) }); await nc.flush(); console.log('ready'); break; } catch { await new Promise((r) => setTimeout(r, 50)); } }`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', responder], { cwd: new URL('.', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => child.stdout.once('data', r));
  const nc = await connect({ servers: url });
  for (let i = 0; i < 200; i++) await nc.request('floor', empty);
  const lat = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    await nc.request('floor', empty);
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  await nc.close();
  child.kill();
  srv.kill();
  return lat;
}

// the least a Node process can spend answering a gRPC call: node:http2 alone (no grpc-js server,
// no bus), an empty answer to every unary call; in a child process like the gateway
function http2Floor() {
  const sock = join(mkdtempSync('/tmp/berth-h2floor-'), 's.sock');
  const code = `
    const http2 = await import('node:http2');
    const s = http2.createServer();
    s.on('stream', (st) => {
      st.on('data', () => undefined);
      st.on('end', () => {
        st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        st.once('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
        st.end(Buffer.alloc(5));
      });
    });
    s.listen(${JSON.stringify(sock)}, () => console.log('ready'));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => child.stdout.once('data', () => resolve({ sock, pid: child.pid, stop: () => child.kill() })));
}

const berth = await startBerth();
const ref = startReference();
try {
  const rows = [];
  const f = (v) => v.toFixed(3);
  const lb = await latency(berth.sock, LIST);
  const lr = ref && await latency(ref.sock, LIST);
  rows.push(['Leases.List forwarded, p50 ms', f(pct(lb, 0.5)), lr ? f(pct(lr, 0.5)) : '-']);
  rows.push(['Leases.List forwarded, p99 ms', f(pct(lb, 0.99)), lr ? f(pct(lr, 0.99)) : '-']);
  // the server side's CPU per call: gateway, leases and nats-server against containerd
  const procs = berthProcesses(join(berth.dir, 'state'));
  const rb = await rate(berth.sock, LIST, ['gateway', 'leases', 'nats-server'].map((k) => procs[k]));
  const rr = ref && await rate(ref.sock, LIST, [ref.pid]);
  rows.push(['Leases.List calls/s, 8 in flight', String(rb.perS), rr ? String(rr.perS) : '-']);
  rows.push(['server CPU µs per List call, 8 in flight', String(rb.cpuUs), rr ? String(rr.cpuUs) : '-']);
  rows.push(['  of which gateway / leases / nats-server', rb.each.join(' / '), '-']);
  const kb = await latency(berth.sock, KEPT);
  const kr = ref && await latency(ref.sock, KEPT);
  rows.push(['Namespaces.List from the read cache, p50 ms', f(pct(kb, 0.5)), kr ? f(pct(kr, 0.5)) : '-']);
  const kc = await rate(berth.sock, KEPT, ['gateway', 'namespaces', 'nats-server'].map((k) => procs[k]));
  const kcr = ref && await rate(ref.sock, KEPT, [ref.pid]);
  rows.push(['  its calls/s, 8 in flight', String(kc.perS), kcr ? String(kcr.perS) : '-']);
  rows.push(['  its server CPU µs per call, 8 in flight', String(kc.cpuUs), kcr ? String(kcr.cpuUs) : '-']);
  rows.push(['  of which gateway / namespaces / nats-server', kc.each.join(' / '), '-']);
  const vb = await latency(berth.sock, VERSION);
  const vr = ref && await latency(ref.sock, VERSION);
  rows.push(['Version (gateway itself), p50 ms', f(pct(vb, 0.5)), vr ? f(pct(vr, 0.5)) : '-']);
  const fl = await floor();
  rows.push(['floor: bare NATS request/reply, p50 ms', f(pct(fl, 0.5)), '-']);
  const h2 = await http2Floor();
  const hl = await latency(h2.sock, LIST);
  const hr = await rate(h2.sock, LIST, [h2.pid]);
  h2.stop();
  rows.push(['floor: bare node:http2 answering, p50 ms', f(pct(hl, 0.5)), '-']);
  rows.push(['floor: its CPU µs per call, 8 in flight', String(hr.cpuUs), '-']);
  printRows(`figure (N=${N})`, rows);
} finally {
  await berth.stop();
  ref?.stop();
}
process.exit(0);
