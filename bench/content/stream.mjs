// Content benchmark: one large blob written (Write, 1 MiB chunks, one request per answer like
// containerd's Go client) and read back (one Read stream), then `ctr content get`'s pattern
// (one Read RPC per 32 KiB), through the gRPC socket, Berth against the reference containerd in
// the same run. For Berth it also reports the peak RSS of the gateway and content processes
// (VmHWM), which must stay bounded whatever the blob size.
// Needs `content` in the stack's services. Run: node bench/content/stream.mjs [MiB=1024]
// (BERTH_STATE=<state dir> measures a stack already running instead of starting one)
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { codec } from '@berth/api';
import { berthProcesses, client, meta, peakRssMb, startBerth, startReference, toBuf } from '../lib.mjs';

const MiB = Number(process.argv[2] ?? 1024);
const chunk = 1 << 20;
const ns = 'bench';
// the blob is written under a lease: Berth collects at least once a minute (containerd only
// after deletions), and unleased content is garbage to a collection
const lease = 'bench-content';
const P = '/containerd.services.content.v1.Content/';
const C = (m) => codec(`containerd.services.content.v1.${m}`);
const WReq = C('WriteContentRequest');
const WRes = C('WriteContentResponse');
const RReq = C('ReadContentRequest');
const RRes = C('ReadContentResponse');

// the same pseudo-random MiB repeated: memory-cheap to produce, not compressible
const block = randomFillSync(Buffer.alloc(chunk));
const h = createHash('sha256');
for (let i = 0; i < MiB; i++) h.update(block);
const digest = 'sha256:' + h.digest('hex');
const size = MiB * chunk;

function write(c) {
  return new Promise((resolve, reject) => {
    const call = c.makeBidiStreamRequest(P + 'Write', toBuf, (b) => b, leased());
    let i = -1;
    const next = () => {
      i++;
      if (i === 0) call.write(toBuf(WReq.encode({ action: 'STAT', ref: 'bench-blob', total: size, expected: digest })));
      else if (i <= MiB) call.write(toBuf(WReq.encode({ action: 'WRITE', offset: (i - 1) * chunk, data: block })));
      else if (i === MiB + 1) call.write(toBuf(WReq.encode({ action: 'COMMIT', offset: size, total: size, expected: digest })));
      else call.end();
    };
    call.on('data', (b) => {
      const r = WRes.decode(b);
      if (i === MiB + 1 && r.digest !== digest) reject(new Error(`committed ${r.digest}`));
      if (i <= MiB + 1) next();
    });
    call.on('error', reject);
    call.on('end', resolve);
    next();
  });
}

function read(c, offset = 0, length = 0) {
  return new Promise((resolve, reject) => {
    const call = c.makeServerStreamRequest(P + 'Read', toBuf, (b) => b, toBuf(RReq.encode({ digest, offset, size: length })), meta(ns));
    const rh = createHash('sha256');
    let n = 0;
    call.on('data', (b) => {
      const d = RRes.decode(b).data;
      rh.update(d);
      n += d.length;
    });
    call.on('error', reject);
    call.on('end', () => resolve({ n, digest: 'sha256:' + rh.digest('hex') }));
  });
}

function unary(c, method, req, res) {
  return new Promise((resolve, reject) => c.makeUnaryRequest(P + method, toBuf, (b) => b, toBuf(C(req).encode({ digest })), meta(ns), (e, r) => (e ? reject(e) : resolve(C(res).decode(r)))));
}

function leased() {
  const m = meta(ns);
  m.set('containerd-lease', lease);
  return m;
}

function leases(c, method, req) {
  const enc = codec(`containerd.services.leases.v1.${method === 'Create' ? 'CreateRequest' : 'DeleteRequest'}`);
  return new Promise((resolve, reject) => c.makeUnaryRequest(`/containerd.services.leases.v1.Leases/${method}`, toBuf, (b) => b, toBuf(enc.encode(req)), meta(ns), (e) => (e ? reject(e) : resolve())));
}


async function run(sock) {
  const c = client(sock);
  await unary(c, 'Delete', 'DeleteContentRequest', 'InfoRequest').catch(() => undefined);
  await leases(c, 'Delete', { id: lease }).catch(() => undefined);
  await leases(c, 'Create', { id: lease });
  let t = performance.now();
  await write(c);
  const writeS = (performance.now() - t) / 1000;
  t = performance.now();
  const r = await read(c);
  const readS = (performance.now() - t) / 1000;
  if (r.n !== size || r.digest !== digest) throw new Error(`read back ${r.n} bytes, ${r.digest}`);
  const small = Math.min(1024, MiB * 32);
  t = performance.now();
  for (let i = 0; i < small; i++) await read(c, i * 32768, 32768);
  const smallMs = (performance.now() - t) / small;
  await unary(c, 'Delete', 'DeleteContentRequest', 'InfoRequest');
  await leases(c, 'Delete', { id: lease });
  c.close();
  return { write: size / 2 ** 20 / writeS, read: size / 2 ** 20 / readS, small: smallMs };
}

const running = process.env.BERTH_STATE;
const berth = running ? { sock: join(running, 'berth.sock'), state: running, stop: async () => {} } : await startBerth();
const ref = startReference();
try {
  const state = berth.state ?? join(berth.dir, 'state');
  const procs = berthProcesses(state);
  const before = Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, peakRssMb(p)]));
  const b = await run(berth.sock);
  const after = Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, peakRssMb(p)]));
  const refBefore = ref ? peakRssMb(ref.pid) : 0;
  const r = ref ? await run(ref.sock) : undefined;
  const refAfter = ref ? peakRssMb(ref.pid) : 0;
  const rows = [
    [`Write ${MiB} MiB, MiB/s`, b.write.toFixed(0), r ? r.write.toFixed(0) : '-'],
    [`Read ${MiB} MiB, MiB/s`, b.read.toFixed(0), r ? r.read.toFixed(0) : '-'],
    ['Read 32 KiB RPC, ms', b.small.toFixed(2), r ? r.small.toFixed(2) : '-'],
  ];
  console.log(`| figure | berth | reference | berth/reference |`);
  console.log('| --- | --- | --- | --- |');
  for (const [k, x, y] of rows) console.log(`| ${k} | ${x} | ${y} | ${y === '-' ? '-' : (Number(x) / Number(y)).toFixed(2)} |`);
  console.log(`\npeak RSS (VmHWM, MiB) before → after the run: ${Object.keys(procs).map((k) => `${k} ${before[k]} → ${after[k]}`).join(', ')}; berth total ${Object.values(after).reduce((a, x) => a + x, 0)}`);
  if (ref) console.log(`reference containerd ${refBefore} → ${refAfter}`);
} finally {
  await berth.stop();
  ref?.stop();
}
