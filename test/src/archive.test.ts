// `berth export` and `berth import` (the images service's Transfer Export and Import) against the
// real ctr on the same stack: an export is byte for byte ctr's; an import of an OCI layout
// tarball or a `docker save` one makes the same images, content labels and snapshots as ctr's.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { tarEnd, tarFile } from '@berth/diff';
import { contentSet, ctr, repo, run, shared, startStack, type Run, type Stack } from './harness.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const img = (n: string) => `${registry}/library/${n}:latest`;

function berth(...args: string[]): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) =>
    execFile(process.execPath, [join(repo, 'packages/cli/dist/main.js'), ...args], { timeout: 120_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr, ms: Date.now() - t0 }),
    ),
  );
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A tar's entries: each header block as it is and its data. */
function tarEntries(b: Buffer): { name: string; header: Buffer; data: Buffer }[] {
  const out = [];
  for (let at = 0; at + 512 <= b.length; ) {
    const header = b.subarray(at, at + 512);
    if (header.every((x) => x === 0)) break;
    const name = header.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
    const size = parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
    out.push({ name, header, data: b.subarray(at + 512, at + 512 + size) });
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

/**
 * Whether two exports are the same tar, byte for byte, but for the order of manifest.json's
 * entries: containerd builds that list from a Go map, so with several manifests ctr's own order
 * changes from run to run (ctr against ctr differs too).
 */
function sameExport(a: Buffer, b: Buffer): boolean {
  if (sha(a) === sha(b)) return true;
  const ea = tarEntries(a);
  const eb = tarEntries(b);
  if (ea.length !== eb.length) return false;
  return ea.every((x, i) => {
    const y = eb[i]!;
    if (!x.header.equals(y.header)) return false;
    if (x.name !== 'manifest.json') return x.data.equals(y.data);
    const sorted = (d: Buffer) => (JSON.parse(d.toString('utf8')) as unknown[]).map((e) => JSON.stringify(e)).sort();
    return assert.deepEqual(sorted(x.data), sorted(y.data)) === undefined;
  });
}

/**
 * What a namespace holds, comparable across namespaces: images, check, content with labels,
 * snapshots; after a garbage collection, so what either import left unreferenced is gone from both.
 */
async function holdings(sock: string, ns: string): Promise<Record<string, unknown>> {
  const gc = await berth('gc', '--address', sock);
  assert.equal(gc.code, 0, gc.stderr);
  const out = async (...a: string[]) => (await ctr(sock, '-n', ns, ...a)).stdout;
  const content = contentSet(await ctr(sock, '-n', ns, 'content', 'ls'));
  return { images: await out('images', 'ls'), check: await out('images', 'check'), content, snapshots: await out('snapshots', 'ls') };
}

describe('export and import', () => {
  let stack: Stack;
  let registryUp = false;
  const tmp = mkdtempSync('/tmp/berth-archive-it-');
  const f = (n: string) => join(tmp, n);

  before(async () => {
    registryUp = (await run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 })).code === 0;
    stack = await startStack();
    if (!registryUp) return;
    for (const a of [[img('busybox')], [img('layered')], ['--all-platforms', img('multi')]]) {
      const r = await ctr(stack.sock, '-n', 'src', 'images', 'pull', '--plain-http', ...a);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.equal((await ctr(stack.sock, '-n', 'src', 'images', 'tag', img('busybox'), 'docker.io/library/bb:1')).code, 0);
  });
  after(async () => {
    await stack?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('berth export writes what ctr images export writes, byte for byte', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const cases: string[][] = [
      [img('busybox')],
      [img('layered')],
      [img('multi')],
      ['--all-platforms', img('multi')],
      ['--platform', 'linux/arm64', img('multi')],
      [img('busybox'), img('layered'), 'docker.io/library/bb:1'],
    ];
    for (const args of cases) {
      const flags = args.filter((a, i) => a.startsWith('--') || args[i - 1]?.startsWith('--platform'));
      const names = args.filter((a) => !flags.includes(a));
      const c = await ctr(stack.sock, '-n', 'src', 'images', 'export', ...flags, f('ctr.tar'), ...names);
      assert.equal(c.code, 0, c.stderr);
      const b = await berth('export', '-a', stack.sock, '-n', 'src', ...flags, f('berth.tar'), ...names);
      assert.equal(b.code, 0, b.stderr);
      assert.ok(sameExport(readFileSync(f('berth.tar')), readFileSync(f('ctr.tar'))), `export ${args.join(' ')}: not ctr's tar`);
    }
    const missing = await berth('export', '-a', stack.sock, '-n', 'src', f('x.tar'), 'nosuch:1');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /image "nosuch:1": not found/);
  });

  test('berth import of an OCI layout tarball makes what ctr images import makes', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    assert.equal((await ctr(stack.sock, '-n', 'src', 'images', 'export', '--all-platforms', f('oci.tar'), img('multi'), img('layered'))).code, 0);
    const b = await berth('import', '-a', stack.sock, '-n', 'imp-berth', f('oci.tar'));
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /layered:latest sha256:/);
    const c = await ctr(stack.sock, '-n', 'imp-ctr', 'images', 'import', f('oci.tar'));
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(await holdings(stack.sock, 'imp-berth'), await holdings(stack.sock, 'imp-ctr'));
    assert.match((await ctr(stack.sock, '-n', 'imp-berth', 'images', 'check')).stdout, /layered:latest .*complete \(6\/6\)/);
    // with a base name and without unpacking
    assert.equal((await ctr(stack.sock, '-n', 'src', 'images', 'export', f('plain.tar'), img('busybox'))).code, 0);
    const strip = await berth('import', '-a', stack.sock, '-n', 'imp-base', '--base-name', 'example.com/imported', '--no-unpack', f('plain.tar'));
    assert.equal(strip.code, 0, strip.stderr);
    const c2 = await ctr(stack.sock, '-n', 'imp-base-ctr', 'images', 'import', '--base-name', 'example.com/imported', '--no-unpack', f('plain.tar'));
    assert.equal(c2.code, 0, c2.stderr);
    // the containerd name annotation wins over the base name, in both
    assert.equal((await ctr(stack.sock, '-n', 'imp-base', 'images', 'ls', '-q')).stdout, (await ctr(stack.sock, '-n', 'imp-base-ctr', 'images', 'ls', '-q')).stdout);
    // a tarball that is no image: InvalidArgument, in containerd's words
    writeFileSync(f('none.tar'), Buffer.concat([tarFile({ name: 'hello.txt' }, Buffer.from('hi')), tarEnd()]));
    const none = await berth('import', '-a', stack.sock, '-n', 'imp-base', f('none.tar'));
    assert.equal(none.code, 1);
    assert.match(none.stderr, /unrecognized image format/);
  });

  test('berth import of a docker save tarball makes what ctr images import makes', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    // docker save's layout: manifest.json, the config as <hex>.json, each layer as <dir>/layer.tar
    const m = (await (await fetch(`http://${registry}/v2/library/busybox/manifests/latest`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    const blob = async (d: string) => Buffer.from(await (await fetch(`http://${registry}/v2/library/busybox/blobs/${d}`)).arrayBuffer());
    const config = await blob(m.config.digest);
    const layer = gunzipSync(await blob(m.layers[0]!.digest));
    const cfgName = `${m.config.digest.slice(7)}.json`;
    const layerDir = createHash('sha256').update(layer).digest('hex');
    const manifest = Buffer.from(JSON.stringify([{ Config: cfgName, RepoTags: ['busybox:saved'], Layers: [`${layerDir}/layer.tar`] }]));
    writeFileSync(
      f('docker.tar'),
      Buffer.concat([
        tarFile({ name: `${layerDir}/layer.tar`, mode: 0o644 }, layer),
        tarFile({ name: cfgName, mode: 0o644 }, config),
        tarFile({ name: 'manifest.json', mode: 0o644 }, manifest),
        tarEnd(),
      ]),
    );
    const b = await berth('import', '-a', stack.sock, '-n', 'dk-berth', f('docker.tar'));
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /^docker\.io\/library\/busybox:saved sha256:[0-9a-f]{64}$/m);
    const c = await ctr(stack.sock, '-n', 'dk-ctr', 'images', 'import', f('docker.tar'));
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(await holdings(stack.sock, 'dk-berth'), await holdings(stack.sock, 'dk-ctr'));
    const r = await ctr(stack.sock, '-n', 'dk-berth', 'containers', 'create', 'docker.io/library/busybox:saved', 'c1');
    assert.equal(r.code, 0, r.stderr);
  });
});
