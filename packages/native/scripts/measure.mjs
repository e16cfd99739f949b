// Figures for the README: addon load time (in fresh processes), and a tmpfs mount+umount through
// the addon against mount(8)/umount(8). Run as root after the build:
//   node packages/native/scripts/measure.mjs
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (ns) => Number(ns) / 1e6;

function fresh(code) {
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' }));
}

const load = [];
const whole = [];
const rss = [];
for (let i = 0; i < 15; i++) {
  load.push(
    fresh(`const r0 = process.memoryUsage.rss(); const t = process.hrtime.bigint();
      process.dlopen({ exports: {} }, ${JSON.stringify(pkg + 'build/berth_native.node')});
      console.log(JSON.stringify([Number(process.hrtime.bigint() - t), process.memoryUsage.rss() - r0]));`),
  );
  // A first import warms Node's ES module loader, which every service pays for anyway.
  const [t, r] = fresh(`await import('data:text/javascript,export default 1');
      const r0 = process.memoryUsage.rss(); const t = process.hrtime.bigint();
      await import(${JSON.stringify(pkg + 'dist/index.js')});
      console.log(JSON.stringify([Number(process.hrtime.bigint() - t), process.memoryUsage.rss() - r0]));`);
  whole.push(t);
  rss.push(r);
}

const { mount, umount2 } = await import(pkg + 'dist/index.js');
const dir = mkdtempSync(join(tmpdir(), 'berth-measure-'));
const time = (n, f) => {
  const xs = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    f();
    xs.push(Number(process.hrtime.bigint() - t));
  }
  return median(xs);
};
try {
  const viaAddon = time(200, () => {
    mount('tmpfs', dir, 'tmpfs', 0, 'size=1m');
    umount2(dir, 0);
  });
  const viaMount8 = time(40, () => {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
    execFileSync('umount', [dir]);
  });
  console.log(`addon dlopen+init (fresh process, median of 15): ${ms(median(load.map((x) => x[0]))).toFixed(2)} ms, RSS +${(median(load.map((x) => x[1])) / 2 ** 20).toFixed(2)} MiB`);
  console.log(`import of @berth/native (its ES modules and the addon; fresh process, loader warm, median of 15): ${ms(median(whole)).toFixed(2)} ms, RSS +${(median(rss) / 2 ** 20).toFixed(1)} MiB`);
  console.log(`tmpfs mount+umount, addon (median of 200): ${ms(viaAddon).toFixed(3)} ms`);
  console.log(`tmpfs mount+umount, mount(8)+umount(8) (median of 40): ${ms(viaMount8).toFixed(2)} ms`);
  console.log(`load average while measuring: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} on ${availableParallelism()} cores`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
