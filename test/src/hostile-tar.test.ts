// Hostile layers: entries and links that try to lead out of the root filesystem. Each tar is
// applied through the layer library directly (plain folder and overlay upperdir) and through the
// Diff service's Apply RPC; after each, the host side must be untouched: a sentinel folder beside
// the root (its entries, modes, times) and every file of /etc (mtime, ctime, mode, link count).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { applyLayer, tarEnd, tarFile, tarHeader, TarReader, T, type TarEntry } from '@berth/diff';
import { metadata, outcome, unary, writeBlob } from './grpc.js';
import { startStack, type Stack } from './harness.js';

type E = TarEntry & { data?: string };

function layer(entries: E[]): Buffer {
  return Buffer.concat([...entries.map((e) => (e.data !== undefined ? tarFile(e, Buffer.from(e.data)) : tarHeader(e))), tarEnd()]);
}

const sym = (name: string, linkname: string): E => ({ name, typeflag: T.symlink, linkname, mode: 0o777 });
const file = (name: string, data = 'pwned\n', mode = 0o644): E => ({ name, data, mode });
const hard = (name: string, linkname: string): E => ({ name, typeflag: T.link, linkname });
const dir = (name: string, mode = 0o755): E => ({ name, typeflag: T.dir, mode });

/** Everything about a tree a write, chmod or time change would move (atimes aside: reads move them). */
function fingerprint(path: string, depth = 3): string {
  const out: string[] = [];
  const walk = (p: string, d: number) => {
    let st;
    try {
      st = lstatSync(p, { bigint: true });
    } catch {
      return;
    }
    out.push(`${p} ${st.mode} ${st.uid}:${st.gid} ${st.size} ${st.nlink} ${st.mtimeNs} ${st.ctimeNs}`);
    if (st.isDirectory() && d > 0) for (const n of readdirSync(p).sort()) walk(join(p, n), d - 1);
  };
  walk(path, depth);
  return out.join('\n');
}

interface Case {
  name: string;
  entries: E[];
  /** what the root holds afterwards when the layer is confined rather than refused */
  check?: (root: string) => void;
  /** the error, when the layer is refused */
  error?: RegExp;
}

const cases: Case[] = [
  { name: '../../etc/x', entries: [file('../../etc/x')], check: (r) => assert.equal(lstatSync(join(r, 'etc/x')).size, 6) },
  { name: '/etc/x', entries: [file('/etc/x')], check: (r) => assert.ok(lstatSync(join(r, 'etc/x')).isFile()) },
  {
    name: 'symlink a -> /etc, then a/passwd',
    entries: [sym('a', '/etc'), file('a/passwd')],
    check: (r) => {
      assert.equal(readlinkSync(join(r, 'a')), '/etc');
      assert.ok(lstatSync(join(r, 'etc/passwd')).isFile());
    },
  },
  {
    name: 'symlink a -> ../../.., then a/x',
    entries: [sym('a', '../../..'), file('a/x')],
    check: (r) => assert.ok(lstatSync(join(r, 'x')).isFile()),
  },
  {
    name: 'symlink a -> /etc, then folder a/ with mode 0777 and a file in it',
    entries: [sym('a', '/etc'), dir('a/', 0o777), file('a/keep')],
    check: (r) => assert.ok(lstatSync(join(r, 'a')).isDirectory()),
  },
  {
    name: 'symlink a -> /etc, then an opaque marker and a whiteout in it',
    entries: [sym('a', '/etc'), file('a/.wh..wh..opq', ''), file('a/.wh.passwd', '')],
    check: (r) => assert.equal(readlinkSync(join(r, 'a')), '/etc'),
  },
  { name: 'hardlink to /etc/passwd', entries: [hard('l', '/etc/passwd')], error: /no such file or directory/ },
  { name: 'hardlink to ../sentinel/file', entries: [hard('l', '../sentinel/file')], error: /no such file or directory/ },
  {
    name: 'hardlink through a symlinked folder to /etc/passwd',
    entries: [sym('e', '/etc'), hard('l', 'e/passwd')],
    error: /no such file or directory/,
  },
  { name: 'symlink loop', entries: [sym('a', 'b'), sym('b', 'a'), file('a/x')], error: /too many links/ },
  {
    name: 'file x, then symlink x -> /etc, then x/y',
    entries: [file('x'), sym('x', '/etc'), file('x/y')],
    check: (r) => {
      assert.equal(readlinkSync(join(r, 'x')), '/etc');
      assert.ok(lstatSync(join(r, 'etc/y')).isFile());
    },
  },
  {
    name: 'folder x, then symlink x -> ../sentinel, then x/file',
    entries: [dir('x'), file('x/in'), sym('x', '../sentinel'), file('x/file', 'overwritten')],
    check: (r) => assert.ok(lstatSync(join(r, 'sentinel/file')).isFile()),
  },
  {
    name: 'a folder in use, then a symlink in it to ../../.., then through it',
    entries: [dir('d'), file('d/f'), sym('d/s', '../../..'), file('d/f2'), file('d/s/sentinel/file', 'overwritten')],
    check: (r) => assert.ok(lstatSync(join(r, 'sentinel/file')).isFile()),
  },
  { name: 'whiteout ../.wh.sentinel', entries: [file('../.wh.sentinel', '')], check: () => {} },
  { name: 'whiteout .wh... (the parent)', entries: [dir('d'), file('d/.wh...', '')], error: /invalid whiteout name/ },
  {
    name: 'device and fifo through a symlinked folder',
    entries: [sym('d', '/dev'), { name: 'd/null2', typeflag: T.char, devmajor: 1, devminor: 3, mode: 0o666 }, { name: 'd/fifo', typeflag: T.fifo, mode: 0o600 }],
    check: (r) => {
      assert.ok(lstatSync(join(r, 'dev/null2')).isCharacterDevice());
      assert.ok(lstatSync(join(r, 'dev/fifo')).isFIFO());
    },
  },
  {
    name: 'setuid file through an absolute symlink chain',
    entries: [sym('usr', '/'), sym('bin', 'usr/etc'), file('bin/su', '#!/bin/sh\n', 0o4755)],
    check: (r) => assert.equal(lstatSync(join(r, 'etc/su')).mode & 0o7777, 0o4755),
  },
];

describe('hostile layers', () => {
  let base: string;
  let sentinel: string;
  const etcBefore = fingerprint('/etc', 1);
  let sentinelBefore: string;

  before(() => {
    base = mkdtempSync('/tmp/berth-hostile-');
    sentinel = join(base, 'sentinel');
    mkdirSync(sentinel);
    writeFileSync(join(sentinel, 'file'), 'keep\n');
    sentinelBefore = fingerprint(sentinel);
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  function hostUntouched(what: string): void {
    assert.equal(fingerprint(sentinel), sentinelBefore, `${what}: the sentinel beside the root changed`);
    assert.deepEqual(readdirSync(base).sort().filter((n) => n !== 'root' && n !== 'upper' && n !== 'lower'), ['sentinel'], `${what}: something appeared beside the root`);
    assert.equal(fingerprint('/etc', 1), etcBefore, `${what}: /etc changed`);
  }

  async function applyTo(root: string, tar: Buffer, opts = {}): Promise<string> {
    try {
      await applyLayer(root, new TarReader(Readable.from([tar])), opts);
      return 'ok';
    } catch (e) {
      return (e as Error).message;
    }
  }

  for (const c of cases) {
    for (const overlay of [false, true]) {
      test(`${c.name} (${overlay ? 'overlay upperdir' : 'plain folder'})`, async () => {
        const root = join(base, overlay ? 'upper' : 'root');
        rmSync(root, { recursive: true, force: true });
        mkdirSync(root);
        let lower: string | undefined;
        if (overlay) {
          lower = join(base, 'lower');
          rmSync(lower, { recursive: true, force: true });
          mkdirSync(join(lower, 'etc'), { recursive: true });
        }
        const got = await applyTo(root, layer(c.entries), overlay ? { overlay: true, parents: [lower!] } : {});
        if (c.error) assert.match(got, c.error);
        else {
          assert.equal(got, 'ok');
          c.check?.(root);
        }
        hostUntouched(c.name);
      });
    }
  }

  test('a hardlink to a file of a lower layer is copied up into the upperdir first', async () => {
    const upper = join(base, 'upper');
    const lower = join(base, 'lower');
    for (const d of [upper, lower]) rmSync(d, { recursive: true, force: true });
    mkdirSync(join(lower, 'etc'), { recursive: true });
    writeFileSync(join(lower, 'etc', 'passwd'), 'root\n', { mode: 0o640 });
    mkdirSync(upper);
    assert.equal(await applyTo(upper, layer([{ ...hard('etc/passwd2', '/etc/passwd'), mode: 0o600 }]), { overlay: true, parents: [lower] }), 'ok');
    const a = lstatSync(join(upper, 'etc/passwd'));
    assert.equal(a.ino, lstatSync(join(upper, 'etc/passwd2')).ino);
    assert.equal(a.nlink, 2);
    assert.equal(a.mode & 0o777, 0o600, "the link's header sets the shared inode's mode, as containerd");
    const l = lstatSync(join(lower, 'etc/passwd'));
    assert.equal(l.nlink, 1, 'the lower layer stays as it was');
    assert.equal(l.mode & 0o777, 0o640, 'the lower layer stays as it was');
    hostUntouched('copy-up');
  });

  describe('through the Apply RPC', () => {
    let stack: Stack;
    const ns = `it-hostile-${process.pid}`;
    before(async () => {
      stack = await startStack();
    });
    after(async () => {
      await stack?.stop();
    });

    for (const c of cases) {
      test(c.name, async () => {
        const root = join(base, 'root');
        rmSync(root, { recursive: true, force: true });
        mkdirSync(root);
        const blob = gzipSync(layer(c.entries));
        const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex');
        assert.equal(await writeBlob(stack.sock, metadata(ns), `hostile-${digest}`, blob, digest), 'ok');
        const got = await outcome(
          unary(stack.sock, '/containerd.services.diff.v1.Diff/Apply', {
            diff: { media_type: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: blob.length },
            mounts: [{ type: 'bind', source: root, options: ['rbind', 'rw'] }],
          }, metadata(ns)),
        );
        if (c.error) assert.match(got, c.error);
        else {
          assert.equal(got, 'ok');
          c.check?.(root);
        }
        assert.ok(!existsSync(join(base, 'root', 'proc')), 'nothing mounted over');
        hostUntouched(c.name);
      });
    }
  });
});
