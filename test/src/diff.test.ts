// The diff service end to end: real `ctr images pull` (content, snapshots, Diff.Apply) of the
// local registry's images against the stack; the layered image unpacked by Berth and by the
// reference containerd gives the same tree; Apply's answers for odd inputs match the reference's.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readSync, readlinkSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { execFileSync } from 'node:child_process';
import { llistxattr, lgetxattr, major, minor } from '@berth/native';
import { tarEnd, tarFile, tarHeader, tarSparseFile, TarReader, T } from '@berth/diff';
import { metadata, outcome, unary, writeBlob } from './grpc.js';
import { ctr, referenceLikeGc, run, shared, startReference, startStack, type Reference, type Stack } from './harness.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';

function fileHash(p: string): string {
  const h = createHash('sha256');
  const fd = openSync(p, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** One line per path: type, mode, owner, size, link target, device, xattrs, mtime and content hash. */
export function listing(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const p = rel ? join(root, rel) : root;
    const st = lstatSync(p, { bigint: true });
    const type = st.isDirectory() ? 'd' : st.isFile() ? 'f' : st.isSymbolicLink() ? 'l' : st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : st.isFIFO() ? 'p' : 's';
    let xattrs: string[] = [];
    try {
      xattrs = llistxattr(p)
        .sort()
        .map((n) => `${n}=${lgetxattr(p, n).toString('hex')}`);
    } catch {
      // no xattrs here
    }
    const extra =
      type === 'f' ? fileHash(p) : type === 'l' ? `-> ${readlinkSync(p)}` : type === 'c' || type === 'b' ? `${major(st.rdev)},${minor(st.rdev)}` : '';
    out.push(`/${rel} ${type} ${(st.mode & 0o7777n).toString(8)} ${st.uid}:${st.gid} ${type === 'd' ? '' : st.size} ${type === 'd' ? '' : st.mtimeNs} ${extra} ${xattrs.join(',')}`);
    if (type === 'd') for (const n of readdirSync(p).sort()) walk(rel ? `${rel}/${n}` : n);
  };
  walk('');
  return out;
}

describe('diff', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  let registryUp = false;
  const ns = `it-diff-${process.pid}`;
  const tmp = mkdtempSync('/tmp/berth-diff-it-');

  before(async () => {
    const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
    // blobs this file writes and Diff makes are unleased, as in the reference; no automatic
    // collection may take one between two steps of a test (the reference collects on deletions only)
    [stack, ref] = await Promise.all([startStack({ config: referenceLikeGc(tmp, { afterDeletions: false }) }), startReference()]);
    registryUp = (await reg).code === 0;
  });
  after(async () => {
    await ref?.stop();
    await stack?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  for (const image of ['busybox', 'layered', 'big']) {
    test(`ctr images pull ${image} unpacks through Diff.Apply`, async (t) => {
      if (!registryUp) return t.skip('no local registry');
      const name = `${registry}/library/${image}:latest`;
      const r = await ctr(stack.sock, '-n', ns, 'images', 'pull', '--plain-http', name);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /done/);
      const check = await ctr(stack.sock, '-n', ns, 'images', 'check');
      assert.match(check.stdout, new RegExp(`${image}:latest.*complete`));
      const snaps = await ctr(stack.sock, '-n', ns, 'snapshots', 'ls');
      assert.match(snaps.stdout, /Committed/);
    });
  }

  test('the layered image unpacks to the same tree as with the reference', async (t) => {
    if (!registryUp || !ref) return t.skip('no registry or reference');
    const name = `${registry}/library/layered:latest`;
    const trees: string[][] = [];
    for (const sock of [stack.sock, ref.sock]) {
      const pull = await ctr(sock, '-n', ns, 'images', 'pull', '--plain-http', name);
      assert.equal(pull.code, 0, pull.stderr);
      const target = join(tmp, `mnt-${trees.length}`);
      mkdirSync(target);
      const m = await ctr(sock, '-n', ns, 'images', 'mount', name, target);
      assert.equal(m.code, 0, m.stderr);
      try {
        trees.push(listing(target));
      } finally {
        await ctr(sock, '-n', ns, 'images', 'unmount', '--rm', target);
      }
    }
    assert.ok(trees[0].length > 10, `a real tree: ${trees[0].length} entries`);
    assert.deepEqual(trees[0], trees[1]);
  });

  describe('Diff', () => {
    /** Two trees: `lower`, and `upper` = lower with every kind of change. */
    function trees(): { lower: string; upper: string } {
      const lower = mkdtempSync(join(tmp, 'lower-'));
      const upper = mkdtempSync(join(tmp, 'upper-'));
      const sh = (dir: string, script: string) => execFileSync('sh', ['-ec', script], { cwd: dir });
      const base = `mkdir -p etc bin gone/deep same; echo root > etc/passwd; echo x > gone/deep/f; echo keep > same/k; touch -d @1600000000 same/k same etc etc/passwd;
        echo bin > bin/tool; ln bin/tool bin/tool2; chmod 755 bin/tool; ln -s tool bin/link; mkfifo same/fifo; touch -d @1600000000 bin bin/tool same/fifo; touch -h -d @1600000000 bin/link`;
      sh(lower, base);
      sh(upper, `${base}; rm -r gone; echo changed > etc/passwd; chmod 4755 bin/tool; echo new > etc/new; ln -s /etc/passwd etc/abs; mkdir -p opt/app; echo app > opt/app/a; ln opt/app/a opt/app/b; mknod etc/null c 1 3; touch -d @1700000000 etc/passwd etc/new bin/tool opt/app/a`);
      return { lower, upper };
    }

    async function entries(sock: string, digest: string): Promise<string[]> {
      const blob = execFileSync('ctr', ['--address', sock, '-n', ns, 'content', 'get', digest], { maxBuffer: 1 << 26 });
      const tar = new TarReader(Readable.from([gunzipSync(blob)]));
      const out: string[] = [];
      for (let h; (h = await tar.next()); ) {
        const data: Buffer[] = [];
        for await (const { chunk } of tar.data()) data.push(Buffer.from(chunk));
        const wh = h.name.includes('.wh.');
        out.push(`${h.name} ${h.typeflag} ${h.mode.toString(8)} ${h.uid}:${h.gid} ${h.size} ${wh ? '' : h.mtime} ${h.linkname} ${h.devmajor},${h.devminor} ${[...h.xattrs.keys()]} ${Buffer.concat(data).toString()}`);
      }
      return out;
    }

    test('the layer between two trees: same entries as the reference, labelled, and it rebuilds the upper tree', async () => {
      const { lower, upper } = trees();
      const results: { digest: string; size: number; media_type: string; entries: string[] }[] = [];
      for (const sock of ref ? [stack.sock, ref.sock] : [stack.sock]) {
        const r = await unary(sock, '/containerd.services.diff.v1.Diff/Diff', {
          left: [{ type: 'bind', source: lower, options: ['rbind', 'rw'] }],
          right: [{ type: 'bind', source: upper, options: ['rbind', 'rw'] }],
          labels: { 'test.label': 'x' },
        }, metadata(ns));
        assert.equal(r.diff.media_type, 'application/vnd.oci.image.layer.v1.tar+gzip');
        const info = await unary(sock, '/containerd.services.content.v1.Content/Info', { digest: r.diff.digest }, metadata(ns));
        assert.equal(info.info.size, r.diff.size);
        assert.equal(info.info.labels['test.label'], 'x');
        const blob = execFileSync('ctr', ['--address', sock, '-n', ns, 'content', 'get', r.diff.digest], { maxBuffer: 1 << 26 });
        assert.equal(info.info.labels['containerd.io/uncompressed'], 'sha256:' + createHash('sha256').update(gunzipSync(blob)).digest('hex'));
        results.push({ ...r.diff, entries: await entries(sock, r.diff.digest) });
      }
      const ours = results[0].entries;
      assert.ok(ours.some((e) => e.startsWith('gone/.wh.deep ') === false && e.startsWith('.wh.gone ')), ours.join('\n'));
      if (results[1]) assert.deepEqual(ours, results[1].entries);

      // applying it onto a copy of the lower tree gives the upper one
      const copy = mkdtempSync(join(tmp, 'copy-'));
      execFileSync('cp', ['-a', `${lower}/.`, copy]);
      await unary(stack.sock, '/containerd.services.diff.v1.Diff/Apply', {
        diff: { media_type: results[0].media_type, digest: results[0].digest, size: results[0].size },
        mounts: [{ type: 'bind', source: copy, options: ['rbind', 'rw'] }],
      }, metadata(ns));
      // a layer keeps whole seconds (as containerd's); folders' times move as their contents change
      const strip = (l: string[]) =>
        l
          .slice(1)
          .filter((x) => !/^\S+ d /.test(x))
          .map((x) => x.replace(/^(\S+ \S+ \S+ \S+ \S+ )(\d+)\d{9} /, '$1$2 '));
      assert.deepEqual(strip(listing(copy)), strip(listing(upper)));
    });

    test('ctr snapshots diff of each layer of the layered image gives the reference\'s entries', async (t) => {
      if (!registryUp || !ref) return t.skip('no registry or reference');
      const name = `${registry}/library/layered:latest`;
      const sns = `${ns}-snapdiff`; // only the layered image's snapshots, on both
      for (const sock of [stack.sock, ref.sock]) assert.equal((await ctr(sock, '-n', sns, 'images', 'pull', '--plain-http', name)).code, 0);
      const keys = (await ctr(stack.sock, '-n', sns, 'snapshots', 'ls')).stdout
        .split('\n')
        .slice(1)
        .filter((l) => l.includes('Committed'))
        .map((l) => l.split(/\s+/)[0]);
      assert.ok(keys.length >= 4, keys.join(','));
      const layer = async (sock: string, key: string) => {
        const gz = execFileSync('ctr', ['--address', sock, '-n', sns, 'snapshots', 'diff', key], { maxBuffer: 1 << 28 });
        const tar = new TarReader(Readable.from([gunzipSync(gz)]));
        const out: string[] = [];
        for (let h; (h = await tar.next()); ) {
          const hash = createHash('sha256');
          for await (const { chunk } of tar.data()) hash.update(chunk);
          out.push(`${h.name} ${h.typeflag} ${h.mode.toString(8)} ${h.uid}:${h.gid} ${h.size} ${h.name.includes('.wh.') ? '' : h.mtime} ${h.linkname} ${[...h.xattrs.keys()]} ${hash.digest('hex')}`);
        }
        return out;
      };
      for (const key of keys) assert.deepEqual(await layer(stack.sock, key), await layer(ref.sock, key), key);
    });

    test('an unsupported media type is Unimplemented, as with the reference', async () => {
      const { lower, upper } = trees();
      const outs: string[] = [];
      for (const sock of ref ? [stack.sock, ref.sock] : [stack.sock]) {
        outs.push(await outcome(unary(sock, '/containerd.services.diff.v1.Diff/Diff', {
          left: [{ type: 'bind', source: lower, options: ['rbind', 'rw'] }],
          right: [{ type: 'bind', source: upper, options: ['rbind', 'rw'] }],
          media_type: 'application/vnd.oci.image.layer.v1.tar+zstd',
        }, metadata(ns))));
      }
      assert.equal(outs[0], '12 unsupported diff media type: application/vnd.oci.image.layer.v1.tar+zstd: not implemented');
      if (outs[1]) assert.equal(outs[0], outs[1]);
    });
  });

  describe('Apply', () => {
    /** Writes `blob` to both stores and applies it to a fresh folder with each: `ok <applied>` or `<code> <message>` of each. */
    async function applyBoth(blob: Buffer, desc: { media_type: string; digest?: string }, write = true): Promise<{ ours: string; theirs?: string; dirs: string[] }> {
      const digest = desc.digest ?? 'sha256:' + createHash('sha256').update(blob).digest('hex');
      const res: string[] = [];
      const dirs: string[] = [];
      for (const sock of ref ? [stack.sock, ref.sock] : [stack.sock]) {
        if (write) assert.match(await writeBlob(sock, metadata(ns), `apply-${randomBytes(6).toString('hex')}`, blob, digest), /^ok$|already exists/);
        const dir = mkdtempSync(join(tmp, 'apply-'));
        dirs.push(dir);
        let applied: unknown;
        const o = await outcome(
          unary(sock, '/containerd.services.diff.v1.Diff/Apply', {
            diff: { media_type: desc.media_type, digest, size: blob.length },
            mounts: [{ type: 'bind', source: dir, options: ['rbind', 'rw'] }],
          }, metadata(ns)).then((r) => (applied = r.applied)),
        );
        res.push(o === 'ok' ? `ok ${JSON.stringify(applied)}` : o);
      }
      return { ours: res[0], theirs: res[1], dirs };
    }

    const layer = Buffer.concat([
      tarHeader({ name: 'dir/', typeflag: T.dir, mode: 0o2775, uid: 1000, gid: 1000, mtime: 1_600_000_000_123_456_789n }),
      tarFile({ name: 'dir/file', mode: 0o4755, uid: 1, gid: 2, mtime: 1_500_000_000_987_654_321n, xattrs: { 'user.test': Buffer.from([0xff, 0, 1]), 'security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex') } }, Buffer.from('hello\n')),
      tarHeader({ name: 'dir/link', typeflag: T.link, linkname: 'dir/file', mode: 0o4755, uid: 1, gid: 2, mtime: 1_500_000_000_987_654_321n }),
      tarHeader({ name: 'dir/sym', typeflag: T.symlink, linkname: '../nowhere', mode: 0o777, mtime: 1_400_000_000_000_000_001n }),
      tarHeader({ name: 'dir/null', typeflag: T.char, devmajor: 1, devminor: 3, mode: 0o666 }),
      tarHeader({ name: 'dir/fifo', typeflag: T.fifo, mode: 0o1600 }),
      tarFile({ name: `dir/${'long-name-'.repeat(20)}`, mode: 0o600 }, Buffer.from('long\n')),
      tarFile({ name: `dir/${'gnu-long-'.repeat(20)}`, mode: 0o600, gnuLongNames: true }, Buffer.from('gnu\n')),
      tarFile({ name: 'dir/big-uid', uid: 3_000_000, gid: 3_000_001, base256: true }, Buffer.from('256\n')),
      tarSparseFile({ name: 'dir/sparse', mode: 0o644, mtime: 1_700_000_000_000_000_000n }, 64 << 20, [
        { offset: 4096, data: Buffer.from('start') },
        { offset: (64 << 20) - 3, data: Buffer.from('end') },
      ]),
      tarEnd(),
    ]);

    for (const [what, blob, media_type] of [
      ['tar', layer, 'application/vnd.oci.image.layer.v1.tar'],
      ['tar+gzip', gzipSync(layer), 'application/vnd.oci.image.layer.v1.tar+gzip'],
      ['tar+zstd', execFileSync('zstd', ['-q', '-c'], { input: layer }), 'application/vnd.oci.image.layer.v1.tar+zstd'],
      ['docker tar.gzip', gzipSync(layer), 'application/vnd.docker.image.rootfs.diff.tar.gzip'],
    ] as const) {
      test(`a ${what} layer with every kind of entry gives the reference's tree and digest`, async () => {
        const r = await applyBoth(blob, { media_type });
        const uncompressed = 'sha256:' + createHash('sha256').update(layer).digest('hex');
        assert.match(r.ours, new RegExp(`^ok.*${uncompressed}`), r.ours);
        assert.equal(JSON.parse(r.ours.slice(r.ours.indexOf(' ') + 1)).size, layer.length);
        const ours = listing(r.dirs[0]);
        assert.ok(ours.some((l) => l.startsWith(`/dir/sparse f 644 0:0 ${64 << 20} 1700000000000000000`)), ours.join('\n'));
        assert.ok(ours.some((l) => l.startsWith(`/dir/big-uid f 644 3000000:3000001 4 `)), ours.join('\n'));
        // containerd writes a sparse file's holes out as zeros; Berth keeps them holes (same bytes)
        assert.ok(lstatSync(join(r.dirs[0], 'dir/sparse')).blocks < 64, 'the holes stay holes');
        if (ref) {
          assert.equal(r.ours, r.theirs);
          assert.deepEqual(ours.slice(1), listing(r.dirs[1]).slice(1));
        }
      });
    }

    test('a sparse file larger than 8 GiB (base-256 size in the header) stays sparse', async () => {
      const size = 9 * 2 ** 30;
      const big = Buffer.concat([
        tarSparseFile({ name: 'huge', mode: 0o600, base256: true }, size, [
          { offset: 0, data: Buffer.from('head') },
          { offset: size - 4, data: Buffer.from('tail') },
        ]),
        tarEnd(),
      ]);
      const digest = 'sha256:' + createHash('sha256').update(big).digest('hex');
      assert.match(await writeBlob(stack.sock, metadata(ns), `huge-${process.pid}`, big, digest), /^ok|already exists/);
      const dir = mkdtempSync(join(tmp, 'huge-'));
      await unary(stack.sock, '/containerd.services.diff.v1.Diff/Apply', {
        diff: { media_type: 'application/vnd.oci.image.layer.v1.tar', digest, size: big.length },
        mounts: [{ type: 'bind', source: dir, options: ['rbind', 'rw'] }],
      }, metadata(ns));
      const st = lstatSync(join(dir, 'huge'));
      assert.equal(st.size, size);
      assert.ok(st.blocks < 64, `${st.blocks} blocks`);
      const fd = openSync(join(dir, 'huge'), 'r');
      const b = Buffer.alloc(4);
      readSync(fd, b, 0, 4, 0);
      assert.equal(b.toString(), 'head');
      readSync(fd, b, 0, 4, size - 4);
      assert.equal(b.toString(), 'tail');
      readSync(fd, b, 0, 4, 2 ** 32);
      assert.deepEqual([...b], [0, 0, 0, 0]);
      closeSync(fd);
    });

    test('an unknown media type and a missing blob fail as with the reference', async () => {
      const blob = gzipSync(layer);
      const unknown = await applyBoth(blob, { media_type: 'application/x-unknown' });
      assert.match(unknown.ours, /^2 failed to get stream processor for application\/x-unknown: no processor for media-type/);
      if (ref) assert.equal(unknown.ours, unknown.theirs);
      const missing = await applyBoth(blob, { media_type: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: 'sha256:' + '0'.repeat(64) }, false);
      assert.match(missing.ours, /^5 .*not found/);
      if (ref) assert.equal(missing.ours, missing.theirs);
    });

    test('a blob whose file no longer matches its digest fails the Apply', async () => {
      const blob = Buffer.concat([tarFile({ name: 'corrupt-me' }, randomBytes(4096)), tarEnd()]);
      const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex');
      assert.equal(await writeBlob(stack.sock, metadata(ns), `corrupt-${process.pid}`, blob, digest), 'ok');
      const file = execFileSync('find', [stack.root, '-name', digest.slice(7), '-type', 'f']).toString().trim().split('\n')[0];
      assert.ok(file, 'the blob file');
      const fd = openSync(file, 'r+');
      writeSync(fd, Buffer.from([blob[1000] ^ 0xff]), 0, 1, 1000); // inside the file's data: still a valid tar
      closeSync(fd);
      const dir = mkdtempSync(join(tmp, 'corrupt-'));
      const got = await outcome(
        unary(stack.sock, '/containerd.services.diff.v1.Diff/Apply', {
          diff: { media_type: 'application/vnd.oci.image.layer.v1.tar', digest, size: blob.length },
          mounts: [{ type: 'bind', source: dir, options: ['rbind', 'rw'] }],
        }, metadata(ns)),
      );
      assert.match(got, /^9 content sha256:\w+ does not match its descriptor/);
    });
  });
});
