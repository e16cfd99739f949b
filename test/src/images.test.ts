// The real `ctr images` and `ctr containers` with images, against the stack and the reference
// containerd 1.6.20 in the same run: every step's exit code and output must agree (pull progress
// and durations are left out; they differ from run to run on either).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { contentSet, ctr, run, shared, startReference, startStack, type Reference, type Run, type Stack } from './harness.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const img = (name: string) => `${registry}/library/${name}:latest`;

/** What of a ctr run is the same on every run: exit code and output without timings. */
function stable(r: Run): string {
  const out = (r.stdout + r.stderr)
    .split('\n')
    // pull progress (a redrawn table) and its summary line are timing, not outcome
    // ctr's progress display may log a status lookup it cancelled itself (a race in ctr)
    .filter((l) => !/msg="(failed to get content info|active check failed)" error="context canceled"/.test(l))
    .filter((l) => !/^(elapsed:|\S+-sha256:|\S+:\s+(resolv|waiting|downloading|done|exists))/.test(l.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '')))
    .map((l) => l.replace(/^done: \S+/, 'done: T').replace(/"(CreatedAt|UpdatedAt)": "[^"]+"/g, '"$1": "T"').replace(/time="[^"]+"/, 'time=T').trimEnd())
    // ctr prints a label map in Go's random map order
    .map((l) => (/^[\w.\/-]+=[^,\s]*(,[\w.\/-]+=[^,\s]*)+$/.test(l) ? l.split(',').sort().join(',') : l))
    .join('\n')
    .trim();
  return `exit ${r.code}\n${out}`;
}

describe('ctr images and containers agree with containerd', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  let registryUp = false;
  const ns = `it-images-${process.pid}`;
  const tmp = mkdtempSync('/tmp/berth-images-it-');

  before(async () => {
    const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
    [stack, ref] = await Promise.all([startStack(), startReference()]);
    registryUp = (await reg).code === 0;
  });
  after(async () => {
    await ref?.stop();
    await stack?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Runs `args` on both (files named `@` are per-side), asserts the same stable output. */
  async function both(...args: string[]): Promise<[Run, Run]> {
    const side = (which: string) => args.map((a) => a.replace('@', join(tmp, which)));
    const [b, r] = await Promise.all([
      ctr(stack.sock, '-n', ns, ...side('berth')),
      ctr(ref!.sock, '-n', ns, ...side('ref')),
    ]);
    assert.equal(stable(b), stable(r), `ctr ${args.join(' ')}`);
    return [b, r];
  }

  test('pull, ls, check, tag, label, export, rm, import; containers from an image', async (t) => {
    if (!registryUp || !ref) return t.skip('no local registry or reference containerd');
    for (const args of [
      [img('busybox')],
      [img('layered')],
      ['--platform', 'linux/arm64', img('multi')],
      ['--all-platforms', img('multi')],
    ]) {
      const [b] = await both('images', 'pull', '--plain-http', ...args);
      assert.equal(b.code, 0, b.stderr);
    }
    await both('images', 'pull', '--plain-http', `${registry}/library/nosuch:latest`);
    await both('images', 'pull', '--plain-http', '--platform', 'linux/s390x', img('multi'));
    await both('images', 'ls');
    const [check] = await both('images', 'check');
    assert.match(check.stdout, /multi:latest .*complete/);
    await both('images', 'tag', img('busybox'), 'example.com/bb:1');
    await both('images', 'tag', img('busybox'), 'example.com/bb:1');
    await both('images', 'tag', '--force', img('layered'), 'example.com/bb:1');
    await both('images', 'label', 'example.com/bb:1', 'a=b', 'c=d');
    await both('images', 'label', 'example.com/bb:1', 'c=');
    await both('images', 'ls', 'labels.a==b');
    await both('images', 'ls', '-q', 'name~=multi');
    await both('images', 'label', 'nosuch:1', 'a=b');

    const [cb, cr] = await Promise.all([ctr(stack.sock, '-n', ns, 'content', 'ls'), ctr(ref.sock, '-n', ns, 'content', 'ls')]);
    assert.deepEqual(contentSet(cb), contentSet(cr), 'content and its labels after the pulls');
    const [sb, sr] = await Promise.all([ctr(stack.sock, '-n', ns, 'snapshots', 'ls'), ctr(ref.sock, '-n', ns, 'snapshots', 'ls')]);
    assert.equal(sb.stdout, sr.stdout, 'snapshot chains after the pulls');

    for (const name of ['busybox', 'layered', 'multi']) {
      await both('images', 'export', `@-${name}.tar`, img(name));
      const hash = (w: string) => createHash('sha256').update(readFileSync(join(tmp, `${w}-${name}.tar`))).digest('hex');
      assert.equal(hash('berth'), hash('ref'), `export of ${name} is byte for byte the reference's`);
    }
    await both('images', 'export', '--platform', 'linux/arm64', '@-arm.tar', img('multi'));
    await both('images', 'rm', 'example.com/bb:1', img('layered'));
    await both('images', 'rm', 'example.com/bb:1');
    assert.match((await both('images', 'import', '--base-name', 'imported', '@-layered.tar'))[0].stdout, /unpacking .*layered:latest.*done/);
    await both('images', 'import', '--index-name', '@-multi.tar');
    await both('images', 'ls');
    await both('images', 'check', 'name~=layered');

    // containers made from an image: the snapshot and the spec come from it
    assert.equal((await both('containers', 'create', img('busybox'), 'c1'))[0].code, 0);
    await both('containers', 'create', '--label', 'x=y', img('layered'), 'c2', 'sh', '-c', 'true');
    await both('containers', 'create', img('busybox'), 'c1');
    await both('containers', 'create', 'nosuch:1', 'c3');
    await both('containers', 'ls');
    await both('containers', 'ls', 'image~=layered');
    await both('containers', 'ls', '-q', 'labels.x==y');
    assert.match((await both('containers', 'info', 'c1'))[0].stdout, /"SnapshotKey": "c1"/);
    await both('containers', 'info', 'c2');
    await both('containers', 'label', 'c1', 'k=v');
    await both('containers', 'info', 'c1');
    await both('snapshots', 'ls');
    await both('containers', 'rm', 'c1', 'c2');
    await both('containers', 'ls');
    await both('snapshots', 'ls');
  });
});
