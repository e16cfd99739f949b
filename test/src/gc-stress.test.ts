// The collector under load, through the real stack, the real ctr and the local registry: workers in
// several namespaces pull, tag, remove images and create and remove containers while collections
// run back to back (GC.Collect in a loop, and a 1 s timer besides). A fixed number of iterations
// bounds it. Afterwards every image left is complete and runs, every container left starts, and
// after a last collection each namespace holds exactly what its images and containers reference:
// the expected sets come from fresh pulls of the same images into empty namespaces, not from the
// stressed ones. Last, with everything removed, no blob file and no snapshot directory stays.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ctr, run, shared, startStack, type Stack } from './harness.js';
import { unary } from './grpc.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const img = (name: string) => `${registry}/library/${name}:latest`;
const sources = ['busybox', 'layered'] as const;
type Source = (typeof sources)[number];

const WORKERS = 3;
const ITERATIONS = 8;

const lines = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean);
const column = (s: string, i: number) => lines(s).slice(1).map((l) => l.split(/\s+/)[i]!);
const sorted = (xs: Iterable<string>) => [...new Set(xs)].sort();
/** Paths under `dir` (recursively) that match `re`. */
const files = (dir: string, re: RegExp) => (readdirSync(dir, { recursive: true }) as string[]).map((p) => join(dir, p)).filter((p) => re.test(p));

describe('garbage collection under load', () => {
  let stack: Stack;
  let registryUp = false;
  const dir = mkdtempSync('/tmp/berth-gc-stress-');

  before(async () => {
    const config = join(dir, 'config.toml');
    writeFileSync(config, '[gc]\ninterval = "1s"\n');
    const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
    stack = await startStack({ config });
    registryUp = (await reg).code === 0;
  });
  after(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('pulls, tags, image and container removals racing collections leave complete images and no garbage', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const t0 = Date.now();
    const tag = `${process.pid}`;
    const on = (ns: string, ...args: string[]) => ctr(stack.sock, '-n', ns, ...args);
    const failures: string[] = [];
    const must = async (ns: string, ...args: string[]) => {
      const r = await on(ns, ...args);
      if (r.code !== 0) failures.push(`${ns}: ctr ${args.join(' ')}: ${r.stderr.trim()}`);
      return r.code === 0;
    };

    // the collector, back to back, for as long as the workers run
    let stop = false;
    const freed = { collections: 0, skipped: 0, content: 0, blobs: 0, snapshots: 0, leases: 0, bytes: 0 };
    const collect = async () => {
      const r = await unary(stack.sock, '/berth.gc.v1.GC/Collect', {});
      freed.collections++;
      freed.content += Number(r.content_removed);
      freed.blobs += Number(r.blobs_removed);
      freed.snapshots += Number(r.snapshots_removed);
      freed.leases += Number(r.leases_removed);
      freed.bytes += Number(r.bytes_freed);
      return r;
    };
    const loop = (async () => {
      while (!stop) await collect().catch(() => freed.skipped++);
    })();

    // each worker owns a namespace; what it leaves is recorded with the image each name and
    // container came from, so the expected sets are known without asking the stressed namespaces
    const spaces = Array.from({ length: WORKERS }, (_, w) => `stress-${tag}-${w}`);
    const left = spaces.map(() => ({ images: new Map<string, Source>(), containers: new Map<string, Source>() }));
    let ops = 0;
    await Promise.all(
      spaces.map(async (ns, w) => {
        const mine = left[w]!;
        for (let i = 0; i < ITERATIONS; i++) {
          const src = sources[(i + w) % 2]!;
          if (await must(ns, 'images', 'pull', '--plain-http', img(src))) mine.images.set(img(src), src);
          const name = `local/w${w}-${i}:latest`;
          if (await must(ns, 'images', 'tag', '--force', img(src), name)) mine.images.set(name, src);
          if (await must(ns, 'containers', 'create', name, `c${i}`)) mine.containers.set(`c${i}`, src);
          ops += 3;
          // every third name goes (its container stays), and the container two back goes
          if (i % 3 === 1 && (await must(ns, 'images', 'rm', `local/w${w}-${i - 1}:latest`))) mine.images.delete(`local/w${w}-${i - 1}:latest`), ops++;
          if (i >= 2 && i % 2 === 0 && (await must(ns, 'containers', 'rm', `c${i - 2}`))) mine.containers.delete(`c${i - 2}`), ops++;
          if (i % 4 !== 3) continue;
          // every fourth iteration drops every name of the image: its content is garbage (its
          // containers keep their snapshots); halfway, a pull of it follows at once and races
          // the collections taking that content
          for (const [n, s] of [...mine.images]) if (s === src && (await must(ns, 'images', 'rm', n))) mine.images.delete(n), ops++;
          if (i < ITERATIONS - 1 && (await must(ns, 'images', 'pull', '--plain-http', img(src)))) mine.images.set(img(src), src), ops++;
        }
      }),
    );
    stop = true;
    await loop;
    const stressMs = Date.now() - t0;
    assert.deepEqual(failures, [], 'every pull, tag, create and rm succeeded');
    assert.ok(freed.collections >= 3, `collections ran during the load (${freed.collections})`);

    // what is left works: images complete and run, containers start
    for (const [w, ns] of spaces.entries()) {
      const mine = left[w]!;
      assert.deepEqual(sorted(lines((await on(ns, 'images', 'ls', '-q')).stdout)), sorted(mine.images.keys()), `${ns}: the images left`);
      assert.deepEqual(sorted(lines((await on(ns, 'containers', 'ls', '-q')).stdout)), sorted(mine.containers.keys()), `${ns}: the containers left`);
      const check = await on(ns, 'images', 'check');
      for (const l of lines(check.stdout).slice(1)) assert.match(l, /\scomplete \((\d+)\/\1\)\s/, `${ns}: ${l}`);
      for (const [name, src] of mine.images) {
        // layered's checker compares the unpacked tree with the one it must be
        const r = await on(ns, 'run', '--rm', '--null-io', name, `run-${w}`, ...(src === 'layered' ? ['/bin/check-expected'] : ['true']));
        assert.equal(r.code, 0, `${ns}: ctr run --rm ${name}: ${r.stdout}${r.stderr}`);
      }
      for (const c of mine.containers.keys()) {
        const r = await on(ns, 'tasks', 'start', '--null-io', c);
        assert.equal(r.code, 0, `${ns}: ctr tasks start ${c}: ${r.stdout}${r.stderr}`);
      }
    }

    // the expected sets: the same images pulled into empty namespaces
    const fresh = new Map<Source, { target: string; content: string[]; chain: string[] }>();
    for (const src of sources) {
      const ns = `fresh-${tag}-${src}`;
      assert.ok(await must(ns, 'images', 'pull', '--plain-http', img(src)), failures.join('\n'));
      fresh.set(src, {
        target: column((await on(ns, 'images', 'ls')).stdout, 2)[0]!,
        content: lines((await on(ns, 'content', 'ls', '-q')).stdout),
        chain: column((await on(ns, 'snapshots', 'ls')).stdout, 0),
      });
    }

    const last = await collect();
    let contentLeft = 0;
    let snapshotsLeft = 0;
    for (const [w, ns] of spaces.entries()) {
      const mine = left[w]!;
      // an image's name says which source it is; its target digest must agree
      const ls = lines((await on(ns, 'images', 'ls')).stdout).slice(1).map((l) => l.split(/\s+/));
      for (const [name, , digest] of ls) assert.equal(digest, fresh.get(mine.images.get(name!)!)!.target, `${ns}: ${name}'s target`);
      const wantContent = sorted([...mine.images.values()].flatMap((s) => fresh.get(s)!.content));
      const wantSnapshots = sorted([...[...mine.images.values(), ...mine.containers.values()].flatMap((s) => fresh.get(s)!.chain), ...mine.containers.keys()]);
      const content = sorted(lines((await on(ns, 'content', 'ls', '-q')).stdout));
      const snapshots = sorted(column((await on(ns, 'snapshots', 'ls')).stdout, 0));
      assert.deepEqual(content, wantContent, `${ns}: content is what its images reference`);
      assert.deepEqual(snapshots, wantSnapshots, `${ns}: snapshots are its images' chains and its containers'`);
      assert.deepEqual(lines((await on(ns, 'leases', 'ls', '-q')).stdout), [], `${ns}: no lease left`);
      assert.deepEqual(lines((await on(ns, 'content', 'active')).stdout).slice(1), [], `${ns}: no ingest left`);
      contentLeft += content.length;
      snapshotsLeft += snapshots.length;
    }
    assert.ok(freed.content > 0, 'the collections freed the content of the images dropped');
    const figures = { ...freed };

    // and once nothing references anything, nothing stays on disk either: blobs and snapshot dirs
    const onDisk = () => ({ blobs: files(stack.root, /\/blobs\/sha256\/[0-9a-f]{64}$/).length, snapshots: files(stack.root, /\/overlayfs\/snapshots\/[^/]+$/).length });
    const before = onDisk();
    assert.ok(before.blobs > 0 && before.snapshots > 0, `found the stores on disk (${JSON.stringify(before)})`);
    for (const ns of [...spaces, ...sources.map((s) => `fresh-${tag}-${s}`)]) {
      for (const c of lines((await on(ns, 'containers', 'ls', '-q')).stdout)) assert.ok(await must(ns, 'containers', 'rm', c), failures.join('\n'));
      const names = lines((await on(ns, 'images', 'ls', '-q')).stdout);
      if (names.length) assert.ok(await must(ns, 'images', 'rm', ...names), failures.join('\n'));
    }
    const end = await collect();
    for (const ns of [...spaces, ...sources.map((s) => `fresh-${tag}-${s}`)]) {
      assert.deepEqual(lines((await on(ns, 'content', 'ls', '-q')).stdout), [], `${ns}: no content left`);
      assert.deepEqual(column((await on(ns, 'snapshots', 'ls')).stdout, 0), [], `${ns}: no snapshot left`);
    }
    // blob files younger than a minute stay by design (README: a commit moves the file in before
    // it records it); aged by hand, as a minute would, the next collection takes them all
    assert.equal(onDisk().snapshots, 0, 'no snapshot directory left on disk');
    const young = files(stack.root, /\/blobs\/sha256\/[0-9a-f]{64}$/);
    const aged = new Date(Date.now() - 120_000);
    for (const f of young) utimesSync(f, aged, aged);
    const late = await collect();
    assert.deepEqual(onDisk(), { blobs: 0, snapshots: 0 }, 'no blob and no snapshot directory left on disk');
    console.log(
      `# ${WORKERS} namespaces x ${ITERATIONS} iterations: ${ops} ctr operations in ${stressMs} ms; ${figures.collections} collections (${figures.skipped} skipped), ` +
        `freeing ${figures.content} content records (${figures.blobs} blobs, ${figures.bytes} bytes), ${figures.snapshots} snapshots, ${figures.leases} leases; ` +
        `left ${contentLeft} content records and ${snapshotsLeft} snapshots, all referenced (last collection marked ${last.marked}); ` +
        `removing all then freed ${end.content_removed} content records and ${end.snapshots_removed} snapshots, and once aged ${late.blobs_removed} blobs (${late.bytes_freed} bytes): ${before.blobs} blob files and ${before.snapshots} snapshot dirs on disk -> 0; ${Date.now() - t0} ms in all`,
    );
  });
});
