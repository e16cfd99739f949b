import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, readFileSync, readSync, rmSync, statSync, symlinkSync, writeFileSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { O, fdPath, openBeneath, openInRoot, openRoot, pathOfFd, resolveInRoot } from './index.js';

// A hostile root: links that point at the host's /etc, above the root, at /, in a loop, and at a
// sentinel folder beside the root that must never be reached.
let top: string;
let root: string;
let outside: string;
let rootFd: number;
before(() => {
  top = mkdtempSync(join(tmpdir(), 'berth-resolve-'));
  root = join(top, 'rootfs');
  outside = join(top, 'outside');
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'c'));
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret'), 'host');
  writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:inside\n');
  writeFileSync(join(root, 'x'), 'x inside');
  symlinkSync('/etc', join(root, 'a'));
  symlinkSync('../../..', join(root, 'b'));
  symlinkSync('/', join(root, 'c', 'd'));
  symlinkSync('loop2', join(root, 'loop1'));
  symlinkSync('loop1', join(root, 'loop2'));
  symlinkSync('../outside', join(root, 'up'));
  symlinkSync('/nowhere/deeper', join(root, 'dangling'));
  symlinkSync('/proc/self/root', join(root, 'magic'));
  rootFd = openRoot(root);
});
after(() => {
  closeSync(rootFd);
  rmSync(top, { recursive: true, force: true });
});

function read(fd: number): string {
  const buf = Buffer.alloc(4096);
  const n = readSync(fd, buf, 0, buf.length, 0);
  closeSync(fd);
  return buf.subarray(0, n).toString();
}

describe('resolveInRoot: containerd semantics (the root is /)', () => {
  const cases: [string, string][] = [
    ['a/passwd', 'etc/passwd'], // absolute symlink: the image's /etc, not the host's
    ['b/x', 'x'], // .. stops at the root
    ['c/d/etc', 'etc'],
    ['c/d/etc/passwd', 'etc/passwd'],
    ['../../../etc/passwd', 'etc/passwd'],
    ['/etc/passwd', 'etc/passwd'],
    ['up/secret', 'outside/secret'], // the sibling folder, but the root's own "outside"
    ['dangling/f', 'nowhere/deeper/f'], // to be created: where the link would lead
    ['new/dir/file', 'new/dir/file'],
    ['c/../../etc', 'etc'],
    ['', ''],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input)} -> ${expected || '(the root)'}`, () => {
      assert.equal(resolveInRoot(root, input), expected ? join(root, expected) : root);
    });
  }

  test('a symlink loop is ELOOP', () => {
    assert.throws(() => resolveInRoot(root, 'loop1/x'), { code: 'ELOOP' });
  });

  test('writing to what it resolves never touches the host', () => {
    const hostPasswd = readFileSync('/etc/passwd', 'utf8');
    for (const p of ['a/passwd', 'b/../etc/passwd', 'c/d/etc/passwd']) writeFileSync(resolveInRoot(root, p), `written via ${p}\n`);
    mkdirSync(join(root, 'outside'));
    writeFileSync(resolveInRoot(root, 'up/secret'), 'inside');
    assert.equal(readFileSync('/etc/passwd', 'utf8'), hostPasswd);
    assert.equal(readFileSync(join(outside, 'secret'), 'utf8'), 'host');
    assert.equal(readFileSync(join(root, 'etc', 'passwd'), 'utf8'), 'written via c/d/etc/passwd\n');
    assert.equal(readFileSync(join(root, 'outside', 'secret'), 'utf8'), 'inside');
    rmSync(join(root, 'outside'), { recursive: true });
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:inside\n');
  });
});

describe('openInRoot: the kernel resolves in the root (openat2 RESOLVE_IN_ROOT)', () => {
  test('a/passwd, b/x, c/d/etc open the root\'s files', () => {
    assert.equal(read(openInRoot(rootFd, 'a/passwd', constants.O_RDONLY)), 'root:x:0:0:inside\n');
    assert.equal(read(openInRoot(rootFd, 'b/x', constants.O_RDONLY)), 'x inside');
    const etc = openInRoot(rootFd, 'c/d/etc', O.PATH | O.DIRECTORY);
    try {
      assert.equal(pathOfFd(etc), join(root, 'etc'));
      // A folder fd names children in that very folder, through Node's own fs calls.
      assert.equal(readFileSync(`${fdPath(etc)}/passwd`, 'utf8'), 'root:x:0:0:inside\n');
    } finally {
      closeSync(etc);
    }
  });

  test('agrees with resolveInRoot wherever the path exists', () => {
    for (const p of ['a', 'a/passwd', 'b/x', 'c/d', 'c/d/etc', 'c/d/c/d/c', '../../../etc', 'b/a/../x', '.']) {
      const fd = openInRoot(rootFd, p, O.PATH);
      try {
        assert.equal(pathOfFd(fd), resolveInRoot(root, p), p);
      } finally {
        closeSync(fd);
      }
    }
  });

  test('creates inside the root through an escaping symlink', () => {
    // "up" is ../outside: in the root that is /outside, not the host's sibling folder.
    assert.throws(() => openInRoot(rootFd, 'up/created', constants.O_WRONLY | constants.O_CREAT, 0o600), { code: 'ENOENT' });
    mkdirSync(join(root, 'outside'));
    closeSync(openInRoot(rootFd, 'up/created', constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600));
    assert.ok(statSync(join(root, 'outside', 'created')).isFile());
    assert.throws(() => statSync(join(outside, 'created')), { code: 'ENOENT' });
    rmSync(join(root, 'outside'), { recursive: true });
  });

  test('loops, magic links and missing paths are errors', () => {
    assert.throws(() => openInRoot(rootFd, 'loop1', constants.O_RDONLY), { code: 'ELOOP', syscall: 'openat2' });
    // A link to /proc/self/root inside the image means the image's /proc: absent here.
    assert.throws(() => openInRoot(rootFd, 'magic/etc/passwd', constants.O_RDONLY), { code: 'ENOENT' });
    // Where /proc is real, its magic links (which jump anywhere) are refused.
    const host = openRoot('/');
    try {
      assert.throws(() => openInRoot(host, 'proc/self/root/etc/passwd', constants.O_RDONLY), { code: 'ELOOP' });
      assert.throws(() => openInRoot(host, `proc/self/fd/${rootFd}/x`, constants.O_RDONLY), { code: 'ELOOP' });
    } finally {
      closeSync(host);
    }
    assert.throws(() => openInRoot(rootFd, 'dangling/f', constants.O_RDONLY), { code: 'ENOENT' });
  });
});

describe('openBeneath: escapes are refused (openat2 RESOLVE_BENEATH)', () => {
  for (const p of ['a/passwd', 'b/x', 'c/d/etc', '../rootfs/x', '/etc/passwd', 'up/secret']) {
    test(`${p} is EXDEV`, () => {
      assert.throws(() => openBeneath(rootFd, p, constants.O_RDONLY), { code: 'EXDEV' });
    });
  }
  test('a path that stays inside opens', () => {
    assert.equal(read(openBeneath(rootFd, 'c/../x', constants.O_RDONLY)), 'x inside');
  });
});
