// Events benchmark: publish → subscriber latency (p50/p99) through the gRPC socket, Berth
// against the reference containerd in the same run, and directly on NATS (Berth only); then
// sustained events/s with 1 and 10 subscribers. Run: node bench/events.mjs [N]
import { codec, toAny } from '@berth/api';
import { decodeEnvelope, envelope, publishEnvelope } from '@berth/bus';
import { client, meta, natsAs, pct, printRows, startBerth, startReference, toBuf, unary } from './lib.mjs';

const N = Number(process.argv[2] ?? 1000);
const Pub = codec('containerd.services.events.v1.PublishRequest');
const Sub = codec('containerd.services.events.v1.SubscribeRequest');
const Env = codec('containerd.services.events.v1.Envelope');
const PUB = '/containerd.services.events.v1.Events/Publish';
const SUB = '/containerd.services.events.v1.Events/Subscribe';
const ns = 'bench';
const ev = (i) => toAny('containerd.events.ContainerCreate', { id: `e${i}` });
const idOf = (env) => codec('containerd.events.ContainerCreate').decode(env.event.value).id;

function subscribe(c, onEvent) {
  const call = c.makeServerStreamRequest(SUB, toBuf, (b) => b, toBuf(Sub.encode({ filters: [`namespace==${ns}`] })), meta(ns));
  call.on('data', (b) => onEvent(Env.decode(b)));
  call.on('error', () => {});
  return call;
}

async function latencyGrpc(sock) {
  const c = client(sock);
  const waiting = new Map();
  const call = subscribe(c, (e) => waiting.get(idOf(e))?.());
  await new Promise((r) => setTimeout(r, 300));
  const lat = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    const got = new Promise((r) => waiting.set(`e${i}`, r));
    await unary(c, PUB, Pub.encode({ topic: '/bench/latency', event: ev(i) }), meta(ns));
    await got;
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  call.cancel();
  c.close();
  return lat;
}

async function latencyNats(berth) {
  // as the events service: the one user that may publish events
  const nc = await natsAs(berth, 'events');
  const waiting = new Map();
  nc.subscribe(`berth.events.${ns}.>`, { callback: (_e, m) => waiting.get(idOf(decodeEnvelope(m.data)))?.() });
  await nc.flush();
  const lat = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    const got = new Promise((r) => waiting.set(`e${i}`, r));
    await publishEnvelope(nc, envelope(ns, '/bench/latency', 'containerd.events.ContainerCreate', { id: `e${i}` }), 'bench');
    await got;
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  await nc.close();
  return lat;
}

async function throughput(sock, subscribers, total = 5 * N, inflight = 32) {
  const c = client(sock);
  const counts = new Array(subscribers).fill(0);
  let doneAll;
  const all = new Promise((r) => (doneAll = r));
  const calls = counts.map((_, k) => subscribe(client(sock), () => { if (++counts[k] === total && counts.every((x) => x >= total)) doneAll(); }));
  await new Promise((r) => setTimeout(r, 500));
  const t0 = Date.now();
  let next = 0;
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (next < total) { const i = next++; await unary(c, PUB, Pub.encode({ topic: '/bench/rate', event: ev(i) }), meta(ns)); }
  }));
  await Promise.race([all, new Promise((r) => setTimeout(r, 60_000))]);
  const s = (Date.now() - t0) / 1000;
  for (const k of calls) k.cancel();
  c.close();
  return Math.round(Math.min(...counts) / s);
}

const berth = await startBerth();
const ref = startReference();
try {
  const rows = [];
  const f = (v) => v.toFixed(2);
  const lb = await latencyGrpc(berth.sock);
  const lr = ref ? await latencyGrpc(ref.sock) : undefined;
  const ln = await latencyNats(berth);
  rows.push(['publish→subscriber p50 ms (gRPC)', f(pct(lb, 0.5)), lr ? f(pct(lr, 0.5)) : '-']);
  rows.push(['publish→subscriber p99 ms (gRPC)', f(pct(lb, 0.99)), lr ? f(pct(lr, 0.99)) : '-']);
  rows.push(['publish→subscriber p50 ms (NATS direct)', f(pct(ln, 0.5)), '-']);
  rows.push(['publish→subscriber p99 ms (NATS direct)', f(pct(ln, 0.99)), '-']);
  for (const n of [1, 10]) {
    const tb = await throughput(berth.sock, n);
    const tr = ref ? await throughput(ref.sock, n) : undefined;
    rows.push([`events/s, ${n} subscriber(s) (gRPC publish, 32 in flight)`, String(tb), tr ? String(tr) : '-']);
  }
  printRows(`figure (N=${N})`, rows);
} finally {
  await berth.stop();
  ref?.stop();
}
process.exit(0);
