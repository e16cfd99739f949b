// Figures for the README: `node shim/dist/bench.js [runs]` (root; runc and busybox).
//   latency: Host.Start + Create (rootfs bind mount) + Start + Wait + Delete + Shutdown of a
//            /bin/true container through the host, against runc alone (create, start, reap, delete)
//   memory:  PSS of a fresh host serving 1, then 20 running containers (smaps_rollup)
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { Reaper, setChildSubreaper } from '@berth/native';
import { EventsEndpoint, makeBundle, pssKiB, rootMount, sleep, startHost, task, taskClient, busyboxRoot } from './testkit.js';
import { mountAll, unmountAll } from '@berth/snapshot/mount';

const runs = Number(process.argv[2] ?? 30);
const ns = `berth-shim-bench-${process.pid}`;
const dir = mkdtempSync('/tmp/berth-shim-bench-');
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const fmt = (xs: number[]) => `median ${pct(xs, 50).toFixed(1)} ms, p95 ${pct(xs, 95).toFixed(1)} ms`;

async function main(): Promise<void> {
  const events = new EventsEndpoint(join(dir, 'events.sock'));
  await events.up();
  const address = join(dir, 'berth.sock');
  const md = { timeoutMs: 30_000, metadata: { 'containerd-namespace-ttrpc': ns } };

  // through the host
  const h = await startHost(join(dir, 'state'), address, events.path);
  const viaHost: number[] = [];
  const hostRun = async (i: number) => {
    const id = `lat${i}`;
    const bundle = makeBundle(dir, id, { args: ['/bin/true'] });
    const t0 = performance.now();
    const { address: a } = await h.host.Start!({ id, namespace: ns, bundle, address, ttrpc_address: events.path });
    const c = await taskClient(a);
    const t = task(c);
    await t.Create!({ id, bundle, rootfs: rootMount(dir) }, md);
    const w = t.Wait!({ id }, md);
    await t.Start!({ id }, md);
    await w;
    await t.Delete!({ id }, md);
    await t.Shutdown!({ id }, md);
    c.close();
    if (i >= 3) viaHost.push(performance.now() - t0);
  };

  // runc alone, from this process (a subreaper like the host), the same bundle shape
  setChildSubreaper(true);
  const exits = new Map<number, () => void>();
  const early = new Set<number>();
  const reaper = new Reaper((e) => {
    const f = exits.get(e.pid);
    if (f) f();
    else early.add(e.pid);
  }).start();
  const run = (args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const c = reaper.track(spawn('runc', ['--root', join(dir, 'runc-alone', ns), ...args], { stdio: 'ignore' }));
      c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`runc ${args[0]} ${code}`))));
    });
  const runcAlone: number[] = [];
  const runcRun = async (i: number) => {
    const id = `runc${i}`;
    const bundle = makeBundle(dir, id, { args: ['/bin/true'] });
    const t0 = performance.now();
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    mountAll([{ type: 'bind', source: busyboxRoot(dir), options: ['rbind', 'ro'] }], join(bundle, 'rootfs'));
    await run(['create', '--bundle', bundle, '--pid-file', join(bundle, 'init.pid'), id]);
    const pid = Number(readFileSync(join(bundle, 'init.pid'), 'utf8'));
    const exited = new Promise<void>((r) => (early.has(pid) ? r() : exits.set(pid, r)));
    await run(['start', id]);
    await exited;
    await run(['delete', id]);
    await unmountAll(join(bundle, 'rootfs'));
    if (i >= 3) runcAlone.push(performance.now() - t0);
  };
  // interleaved, so the load of a shared machine weighs on both alike
  for (let i = 0; i < runs + 3; i++) {
    await hostRun(i);
    await runcRun(i);
  }
  reaper.stop();
  console.log(`create+start+wait+delete, ${runs} runs`);
  console.log(`  through the host (incl. Host.Start, socket, Shutdown): ${fmt(viaHost)}`);
  console.log(`  runc alone (incl. the rootfs bind mount):               ${fmt(runcAlone)}`);
  h.client.close();
  process.kill(h.proc.pid!, 'SIGKILL');

  // memory of a fresh host
  const f = await startHost(join(dir, 'state-mem'), address, events.path);
  const pid = f.proc.pid!;
  await sleep(500);
  const idle = pssKiB(pid);
  const serveOne = async (i: number) => {
    const id = `mem${i}`;
    const bundle = makeBundle(dir, id, { args: ['/bin/sleep', '600'] });
    const { address: a } = await f.host.Start!({ id, namespace: ns, bundle, address, ttrpc_address: events.path });
    const c = await taskClient(a);
    const t = task(c);
    await t.Create!({ id, bundle, rootfs: rootMount(dir) }, md);
    await t.Start!({ id }, md);
    return { id, c, t };
  };
  const served = [await serveOne(0)];
  await sleep(1000);
  const one = pssKiB(pid);
  for (let i = 1; i < 20; i++) served.push(await serveOne(i));
  await sleep(1000);
  const twenty = pssKiB(pid);
  console.log(`host PSS: idle ${(idle / 1024).toFixed(1)} MiB, 1 container ${(one / 1024).toFixed(1)} MiB, 20 containers ${(twenty / 1024).toFixed(1)} MiB`);
  console.log(`  per container beyond the first: ${((twenty - one) / 19).toFixed(0)} KiB; host PSS / 20 = ${(twenty / 20 / 1024).toFixed(2)} MiB per container`);
  for (const s of served) {
    await s.t.Kill!({ id: s.id, signal: 9 }, md);
    await s.t.Wait!({ id: s.id }, md);
    await s.t.Delete!({ id: s.id }, md);
    s.c.close();
  }
  f.client.close();
  process.kill(pid, 'SIGKILL');
  await events.down();
  for (const ctl of readdirSync('/sys/fs/cgroup')) {
    try {
      rmdirSync(join('/sys/fs/cgroup', ctl, 'berth-shim-test'));
    } catch {}
  }
  spawnSync('sh', ['-c', `for b in ${dir}/bundles/*; do umount -R $b/rootfs 2>/dev/null; done`]);
  rmSync(dir, { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
