// Snapshots through the real stack and the real ctr, beside the reference containerd: the same
// commands give the same exit codes and the same output (ids, paths and times normalised); the
// mounts ctr prints work with mount(8); leases hold what is made under them; the namespace
// check counts snapshots; and a kill -9 of the snapshot service in Prepare and Commit leaves
// nothing later calls or Cleanup trip on.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ctr, referenceLikeGc, run, sleep, startReference, startStack, until, type Reference, type Stack } from './harness.js';
import { collect, metadata, outcome, unary } from './grpc.js';

const S = (m: string) => `/containerd.services.snapshots.v1.Snapshots/${m}`;

// What differs between two daemons by nature: their roots, times, numeric ids in keys and paths.
function normalise(text: string, roots: string[]): string {
  let t = text;
  for (const r of roots) t = t.split(r).join('<root>');
  return t
    .replace(/<root>\/snapshot\/overlayfs|<root>\/io\.containerd\.snapshotter\.v1\.overlayfs/g, '<overlayfs>')
    .replace(/<root>\/snapshot\/native|<root>\/io\.containerd\.snapshotter\.v1\.native/g, '<native>')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, '<time>')
    .replace(/snapshots\/\d+/g, 'snapshots/<id>')
    .replace(/default\/\d+\//g, 'default/<seq>/')
    .replace(/[ \t]+$/gm, '');
}

// ctr prints labels from a Go map: in no particular order
const sortLabelLine = (t: string) => t.replace(/^([^\s{}"]+=[^\s]*)$/gm, (l) => l.split(',').sort().join(','));

describe('snapshots: ctr against Berth and the reference containerd', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  const faults = join('/tmp', `berth-snap-faults-${process.pid}`);

  before(async () => {
    // the fault-injection hook (@berth/bus faultPoint): armed only by writing this file
    process.env.BERTH_FAULTS_FILE = faults;
    // The collector as the reference runs it: after deletions only (no timer, no mutation trigger),
    // so what ctr makes without a lease lives exactly as long on both sides (see the steps' labels)
    [stack, ref] = await Promise.all([startStack({ config: referenceLikeGc(gcDir) }), startReference()]);
    // containerd has made its start-up collection before the steps begin. Berth's is skipped when
    // it starts before every service answers, and retried a second later, when it would take the
    // first test's unlabelled views: one collection now stands for it, and leaves none pending
    await collect(stack.sock);
  });

  after(async () => {
    rmSync(gcDir, { recursive: true, force: true });
    rmSync(faults, { force: true });
    await stack?.stop();
    await ref?.stop();
  });

  const gcDir = mkdtempSync(join(tmpdir(), 'berth-snapshot-conf-'));

  const steps: string[][] = [
    ['plugins', 'ls', 'type==io.containerd.snapshotter.v1,id==overlayfs'],
    ['plugins', 'ls', 'type==io.containerd.snapshotter.v1,id==native'],
    ['snapshots', 'prepare', 'a1'],
    ['snapshots', 'mounts', '/tmp/target', 'a1'],
    ['snapshots', 'commit', 'c1', 'a1'],
    ['snapshots', 'prepare', 'a2', 'c1'],
    ['snapshots', 'mounts', '/tmp/target', 'a2'],
    ['snapshots', 'view', 'v2', 'c1'],
    // ctr gives a view no gc.root label: the reference's collector would take it at the next removal
    ['snapshots', 'label', 'v2', 'containerd.io/gc.root=keep'],
    ['snapshots', 'mounts', '/tmp/target', 'v2'],
    ['snapshots', 'commit', 'c2', 'a2'],
    ['snapshots', 'view', 'v3', 'c2'],
    // ctr gives a view no gc.root label: the reference's collector would take it at the next removal
    ['snapshots', 'label', 'v3', 'containerd.io/gc.root=keep'],
    ['snapshots', 'mounts', '/tmp/target', 'v3'],
    ['snapshots', 'prepare', 'a1'],
    ['snapshots', 'prepare', 'x', 'nope'],
    ['snapshots', 'prepare', 'x', 'v2'],
    ['snapshots', 'rm', 'c1'],
    ['snapshots', 'commit', 'c9', 'v2'],
    ['snapshots', 'commit', 'c9', 'c1'],
    ['snapshots', 'commit', 'c1', 'a1'],
    ['snapshots', 'commit', 'c9', 'nope'],
    ['snapshots', 'mounts', '/tmp/target', 'c1'],
    ['snapshots', 'info', 'c2'],
    ['snapshots', 'info', 'nope'],
    ['snapshots', 'label', 'c1', 'a=b', 'c=d'],
    ['snapshots', 'label', 'c1', 'c='],
    ['snapshots', 'info', 'c1'],
    ['snapshots', 'ls'],
    ['snapshots', 'tree'],
    ['snapshots', 'usage'],
    ['snapshots', 'usage', 'c1'],
    ['snapshots', 'usage', 'nope'],
    ['snapshots', 'rm', 'v3'],
    ['snapshots', 'rm', 'nope'],
    ['snapshots', 'rm', 'v2', 'v3'],
    ['snapshots', 'ls'],
    ['snapshots', '--snapshotter', 'foo', 'ls'],
    ['snapshots', '--snapshotter', 'native', 'prepare', 'n1'],
    ['snapshots', '--snapshotter', 'native', 'mounts', '/tmp/target', 'n1'],
    ['snapshots', '--snapshotter', 'native', 'commit', 'nc1', 'n1'],
    ['snapshots', '--snapshotter', 'native', 'prepare', 'n2', 'nc1'],
    ['snapshots', '--snapshotter', 'native', 'view', 'nv', 'nc1'],
    // ctr gives a view no gc.root label: the reference's collector would take it at the next removal
    ['snapshots', '--snapshotter', 'native', 'label', 'nv', 'containerd.io/gc.root=keep'],
    ['snapshots', '--snapshotter', 'native', 'mounts', '/tmp/target', 'nv'],
    ['snapshots', '--snapshotter', 'native', 'ls'],
    ['snapshots', '--snapshotter', 'native', 'usage'],
    ['snapshots', '--snapshotter', 'native', 'rm', 'nc1'],
    ['snapshots', '--snapshotter', 'native', 'rm', 'nv', 'n2', 'nc1'],
    ['snapshots', '--snapshotter', 'native', 'ls'],
    ['namespaces', 'rm', 'default'],
  ];

  test('the same ctr snapshots commands agree with the reference', async (t) => {
    if (!ref) return t.skip('no reference containerd here');
    const roots = [stack.root, join(ref.sock, '..', 'root')];
    const outputs: string[][] = [[], []];
    for (const [i, sock] of [stack.sock, ref.sock].entries()) {
      for (const args of steps) {
        const r = await ctr(sock, '-n', 'default', ...args);
        outputs[i]!.push(`$ ctr ${args.join(' ')}\nexit ${r.code}\n${sortLabelLine(normalise(r.stdout + r.stderr, roots))}`);
        // a removal triggers a collection on both sides; containerd's has run before ctr's next
        // command starts, Berth's runs in its own process: wait for it, so the next step sees the same
        if (sock === stack.sock && args.includes('rm')) await collect(sock);
      }
    }
    const [ours, theirs] = outputs;
    for (let i = 0; i < steps.length; i++) {
      // plugins ls pads its columns to the widest row of what else is listed: compare the row's words
      const cmp = (s: string) => (steps[i]![0] === 'plugins' ? s.replace(/ +/g, ' ') : s);
      assert.equal(cmp(ours![i]!), cmp(theirs![i]!));
    }
    // the usage figures are real: a1's fs is one directory, c1's was measured at commit
    assert.match(ours!.find((o) => o.startsWith('$ ctr snapshots usage c1'))!, /c1\s+4\.0 KiB\s+1/);
  });

  test('events: prepare, commit and remove with containerd\'s payloads (a view has none)', async () => {
    const got: string[][] = [];
    for (const sock of [stack.sock, ...(ref ? [ref.sock] : [])]) {
      const sub = spawn('ctr', ['--address', sock, 'events'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      sub.stdout.on('data', (b) => (out += b));
      await sleep(1000); // ctr subscribes after it starts
      const c = (...a: string[]) => ctr(sock, '-n', 'evt', 'snapshots', ...a);
      // ec1 held as a gc root (a label update has no event): the collection that `rm ev` triggers must
      // not take it before the test removes it, on either side
      for (const step of [['prepare', 'e1'], ['commit', 'ec1', 'e1'], ['label', 'ec1', 'containerd.io/gc.root=keep'], ['view', 'ev', 'ec1'], ['rm', 'ev'], ['rm', 'ec1']]) {
        assert.equal((await c(...step)).code, 0, step.join(' '));
      }
      const want = 4;
      await until(async () => out.split('\n').filter((l) => l.includes(' evt /snapshot/')).length >= want, 10_000, `${want} events from ${sock}`);
      sub.kill();
      got.push(out.split('\n').filter((l) => l.includes(' evt /snapshot/')).map((l) => l.replace(/^.* UTC /, '')));
    }
    assert.deepEqual(got[0], ['evt /snapshot/prepare {"key":"e1"}', 'evt /snapshot/commit {"key":"e1","name":"ec1"}', 'evt /snapshot/remove {"key":"ev"}', 'evt /snapshot/remove {"key":"ec1"}']);
    if (got[1]) assert.deepEqual(got[0], got[1]);
  });

  test('the mounts ctr prints for a short chain work with mount(8)', async () => {
    const sock = stack.sock;
    const c = (...a: string[]) => ctr(sock, '-n', 'mnt', ...a);
    const target = mkdtempSync(join(tmpdir(), 'berth-mnt-'));
    try {
      // a layer written through a mount, committed, and a second on top of it
      let parent = '';
      for (const layer of ['one', 'two']) {
        assert.equal((await c('snapshots', 'prepare', `${layer}-a`, ...(parent ? [parent] : []))).code, 0);
        const cmd = (await c('snapshots', 'mounts', target, `${layer}-a`)).stdout.trim();
        assert.equal((await run('sh', ['-c', cmd])).code, 0, cmd);
        writeFileSync(join(target, layer), layer);
        assert.equal((await run('umount', [target])).code, 0);
        assert.equal((await c('snapshots', 'commit', layer, `${layer}-a`)).code, 0);
        parent = layer;
      }
      assert.equal((await c('snapshots', 'view', 'both', 'two')).code, 0);
      const cmd = (await c('snapshots', 'mounts', target, 'both')).stdout.trim();
      assert.match(cmd, /^mount -t overlay overlay \S+ -o \S*lowerdir=/);
      assert.equal((await run('sh', ['-c', cmd])).code, 0, cmd);
      try {
        assert.deepEqual(readdirSync(target).sort(), ['one', 'two']);
        assert.equal(readFileSync(join(target, 'one'), 'utf8'), 'one');
      } finally {
        await run('umount', [target]);
      }
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });

  test('leases hold what is made under them; the namespace check counts snapshots', async () => {
    for (const sock of [stack.sock, ...(ref ? [ref.sock] : [])]) {
      const md = metadata('leased', 'l1');
      assert.equal((await ctr(sock, '-n', 'leased', 'leases', 'create', '--id', 'l1')).code, 0);
      await unary(sock, S('Prepare'), { snapshotter: 'overlayfs', key: 'k' }, md);
      await unary(sock, S('Commit'), { snapshotter: 'overlayfs', key: 'k', name: 'n' }, md);
      await unary(sock, S('View'), { snapshotter: 'native', key: 'nv' }, md);
      const res = await unary(sock, '/containerd.services.leases.v1.Leases/ListResources', { id: 'l1' }, md);
      assert.deepEqual((res.resources as { id: string; type: string }[]).map((r) => `${r.type} ${r.id}`).sort(), ['snapshots/native nv', 'snapshots/overlayfs n'], sock);
      assert.equal(await outcome(unary(sock, S('Prepare'), { snapshotter: 'overlayfs', key: 'k2' }, metadata('leased', 'nope'))), '5 lease does not exist: not found');
      const rm = await ctr(sock, 'namespaces', 'rm', 'leased');
      assert.match(rm.stderr, /namespace "leased" must be empty, but it still has snapshots on "(native|overlayfs)" snapshotter/, sock);
      await unary(sock, S('Remove'), { snapshotter: 'overlayfs', key: 'n' }, md);
      await unary(sock, S('Remove'), { snapshotter: 'native', key: 'nv' }, md);
      assert.equal((await ctr(sock, '-n', 'leased', 'leases', 'rm', 'l1')).code, 0);
      assert.equal((await ctr(sock, 'namespaces', 'rm', 'leased')).code, 0, sock);
    }
  });

  test('kill -9 of the snapshot service during Prepare and during Commit: later calls and Cleanup handle it', async () => {
    const dir = join(stack.root, 'snapshot', 'overlayfs', 'snapshots');
    const c = (...a: string[]) => ctr(stack.sock, '-n', 'crash', ...a);
    const answers = () => until(async () => (await c('snapshots', 'ls')).code === 0, 30_000, 'snapshot service back');
    assert.equal((await c('snapshots', 'prepare', 'base')).code, 0);
    assert.equal((await c('snapshots', 'commit', 'base-c', 'base')).code, 0);
    for (const fault of ['snapshot-prepare-made', 'snapshot-prepare-placed']) {
      const pid = stack.pid('snapshot');
      writeFileSync(faults, fault);
      const r = await c('snapshots', 'prepare', 'p', 'base-c');
      assert.notEqual(r.code, 0, `${fault}: ${r.stdout}`);
      assert.equal(existsSync(faults), false, 'the fault point was reached');
      await until(async () => stack.pid('snapshot') !== pid, 30_000, 'snapshot service restarted');
      await answers();
      // the restart removed the leftover; the key is free; no record without its directory
      assert.doesNotMatch((await c('snapshots', 'ls')).stdout, /^p\s/m);
      assert.deepEqual(readdirSync(dir).filter((n) => !/^\d+$/.test(n)), []);
    }
    assert.equal((await c('snapshots', 'prepare', 'p', 'base-c')).code, 0);
    const pid = stack.pid('snapshot');
    writeFileSync(faults, 'snapshot-commit-measured');
    assert.notEqual((await c('snapshots', 'commit', 'p-c', 'p')).code, 0);
    await until(async () => stack.pid('snapshot') !== pid, 30_000, 'snapshot service restarted');
    await answers();
    assert.match((await c('snapshots', 'info', 'p')).stdout, /"Kind": "Active"/);
    assert.equal((await c('snapshots', 'commit', 'p-c', 'p')).code, 0);
    // every record's directory is there, and Cleanup removes what no record holds
    mkdirSync(join(dir, '9999', 'fs'), { recursive: true });
    mkdirSync(join(dir, 'new-9998'));
    await unary(stack.sock, S('Cleanup'), { snapshotter: 'overlayfs' }, metadata('crash'));
    assert.equal(existsSync(join(dir, '9999')) || existsSync(join(dir, 'new-9998')), false);
    const v = await c('snapshots', 'view', 'pv', 'p-c');
    assert.equal(v.code, 0, v.stderr);
    for (const k of ['pv', 'p-c', 'base-c']) assert.equal((await c('snapshots', 'rm', k)).code, 0, k);
    assert.equal((await c('snapshots', 'ls')).stdout.trim(), 'KEY PARENT KIND');
  });
});
