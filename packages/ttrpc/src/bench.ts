// Unary round trip over a unix socket, client and server in separate processes (as the tasks
// service and a shim are); with --shim also against the stock Go shim's server (Task/Connect).
// Run: node packages/ttrpc/dist/bench.js [--shim] [iterations]
import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { codec } from '@berth/api';
import { TtrpcClient, TtrpcServer, type CallOptions } from './index.js';
import { killShim, openShimLog, shimAvailable, shimSocket, startShim } from './stockshim.js';

async function roundTrips(label: string, client: TtrpcClient, method: string, payload: Uint8Array, opts: CallOptions, n: number): Promise<void> {
  for (let i = 0; i < 2000; i++) await client.call(S, method, payload, opts);
  const times = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await client.call(S, method, payload, opts);
    times[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  times.sort();
  const q = (p: number) => times[Math.min(n - 1, Math.floor(p * n))]!.toFixed(1);
  console.log(`${label}: unary round trip, ${n} sequential calls: p50 ${q(0.5)} µs, p90 ${q(0.9)} µs, p99 ${q(0.99)} µs`);
}

async function goShim(n: number): Promise<void> {
  if (!shimAvailable) return console.log('stock shim: not available (needs root and containerd-shim-runc-v2)');
  const dir = mkdtempSync('/tmp/berth-ttrpc-bench-');
  const bundle = join(dir, 'bundle');
  mkdirSync(bundle);
  writeFileSync(join(bundle, 'config.json'), '{}');
  const o = { bundle, namespace: `berth-bench-${process.pid}`, id: 'bench', address: join(dir, 'containerd.sock'), publishBinary: '/bin/true' };
  const log = openShimLog(bundle, () => {});
  try {
    const address = await startShim(o);
    const client = await TtrpcClient.connect(address.replace(/^unix:\/\//, ''));
    const req = codec('containerd.task.v2.ConnectRequest').encode({ id: 'bench' });
    await roundTrips('our client -> stock Go shim (Task/Connect)', client, 'Connect', req, {}, n);
    client.close();
  } finally {
    killShim(o);
    rmSync(shimSocket(o.address, o.namespace, o.id), { force: true });
    log.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

const S = 'containerd.task.v2.Task';

if (process.argv[2] === 'serve') {
  const server = new TtrpcServer();
  server.register(S, 'State', (b) => b);
  await server.listen(process.argv[3]!);
  process.send!('ready');
  process.on('disconnect', () => process.exit(0));
} else {
  const args = process.argv.slice(2);
  const withShim = args.includes('--shim');
  const n = Number(args.find((a) => /^\d+$/.test(a)) ?? 20000);
  const dir = mkdtempSync(join(tmpdir(), 'ttrpc-bench-'));
  const path = join(dir, 's.sock');
  const child = fork(new URL(import.meta.url).pathname, ['serve', path]);
  await new Promise((r) => child.once('message', r));
  const client = await TtrpcClient.connect(path);
  // about the size of a StateRequest / StateResponse
  const payload = Buffer.alloc(48, 0x61);
  const opts = { metadata: { 'containerd-namespace-ttrpc': 'default' }, timeoutMs: 5000 };
  await roundTrips('our client -> our server', client, 'State', payload, opts, n);

  const total = 50_000;
  const inflight = 64;
  const t0 = process.hrtime.bigint();
  let sent = 0;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (sent < total) {
        sent++;
        await client.call(S, 'State', payload, opts);
      }
    }),
  );
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`throughput, ${inflight} in flight on one connection: ${Math.round(total / secs)} calls/s`);
  client.close();
  child.disconnect();
  rmSync(dir, { recursive: true, force: true });
  if (withShim) await goShim(n);
}
