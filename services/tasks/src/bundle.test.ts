// Bundles on disk: a removed bundle is out of the way at once and its files gone soon after; what
// a crash left half-removed is found when the service starts again (a kept bundle's shim is ended).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bundles } from './bundle.js';

const info = (id: string) => ({ namespace: 'ns', id, kind: 'stock' as const, binary: 'containerd-shim-runc-v2', runtime: 'io.containerd.runc.v2' });

/** A Bundles in a fresh folder, removed afterwards. */
async function withBundles(fn: (b: Bundles, dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bundle-'));
  try {
    await fn(new Bundles(join(dir, 'state'), join(dir, 'work')), dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) if (check()) return true;
  return check();
}

test('remove: the bundle is gone from its place at once, its and the work folder files soon after', () =>
  withBundles(async (b, dir) => {
    b.create(info('c1'), Buffer.from('{}'));
    writeFileSync(join(dir, 'work', 'ns', 'c1', 'criu.log'), 'x');
    await b.remove('ns', 'c1');
    assert.equal(b.exists('ns', 'c1'), false);
    // the same id can be made again while the old files still go
    b.create(info('c1'), Buffer.from('{}'));
    await b.remove('ns', 'c1');
    assert.ok(await until(() => readdirSync(join(dir, 'state', 'ns')).length === 0 && readdirSync(join(dir, 'work', 'ns')).length === 0, 5000));
  }));

test("remove with a release: the bundle moves at once, its files stay until the release (the shim's Shutdown) settles", () =>
  withBundles(async (b, dir) => {
    b.create(info('c1'), Buffer.from('{}'));
    writeFileSync(join(dir, 'state', 'ns', 'c1', 'address'), 'unix:///nowhere');
    let release!: () => void;
    await b.remove('ns', 'c1', new Promise<void>((r) => (release = r)));
    assert.equal(b.exists('ns', 'c1'), false);
    await new Promise((r) => setTimeout(r, 100));
    const [left, ...more] = b.leftovers();
    assert.deepEqual(more, []);
    assert.ok(existsSync(join(left!, 'address')), 'kept until released');
    assert.equal(b.infoAt(left!)?.id, 'c1');
    release();
    assert.ok(await until(() => b.leftovers().length === 0, 5000));
  }));

test('list: the bundles there; leftovers: what an interrupted removal kept (a leading dot), until discarded', () =>
  withBundles(async (b, dir) => {
    b.create(info('live'), Buffer.from('{}'));
    const [halfBundle, halfWork] = [join(dir, 'state', 'ns', '.c1.k2'), join(dir, 'work', 'ns', '.c1.k2')];
    for (const half of [halfBundle, halfWork]) {
      mkdirSync(join(half, 'rootfs'), { recursive: true });
      writeFileSync(join(half, 'left'), 'x');
    }
    assert.deepEqual(b.list(), [{ namespace: 'ns', id: 'live' }]);
    assert.deepEqual(readdirSync(join(dir, 'work', 'ns')), ['live'], 'a work folder left goes at once');
    assert.deepEqual(b.leftovers(), [halfBundle]);
    await b.discard(halfBundle);
    assert.deepEqual(b.leftovers(), []);
    assert.deepEqual(readdirSync(join(dir, 'state', 'ns')), ['live']);
    assert.ok(existsSync(join(dir, 'state', 'ns', 'live', 'config.json')));
  }));
