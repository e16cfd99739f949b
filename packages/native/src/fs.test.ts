import assert from 'node:assert/strict';
import { lstatSync, lutimesSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  MNT,
  MS,
  S_IF,
  lgetxattr,
  llistxattr,
  lremovexattr,
  lsetxattr,
  major,
  makedev,
  minor,
  mknod,
  mount,
  mountAll,
  parseMountOptions,
  umount2,
  unmountAll,
  utimensat,
} from './index.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'berth-native-'));
});
after(() => {
  // Never leave a mount behind, even when a test failed half-way.
  for (const m of readFileSync('/proc/self/mounts', 'utf8').split('\n').reverse()) {
    const target = m.split(' ')[1];
    if (target?.startsWith(dir)) unmountAll(target, MNT.DETACH);
  }
  rmSync(dir, { recursive: true, force: true });
});

function mountedAt(target: string): string | undefined {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[1] === target);
}

describe('mounts', () => {
  test('a tmpfs mounts, is writable, and unmounts', () => {
    const t = join(dir, 'tmpfs');
    mkdirSync(t);
    mount('tmpfs', t, 'tmpfs', MS.NOSUID, 'size=1m,mode=0750');
    try {
      assert.match(mountedAt(t) ?? '', /^tmpfs \S+ tmpfs .*nosuid.*size=1024k.*mode=750/);
      writeFileSync(join(t, 'f'), 'x');
      assert.equal(readFileSync(join(t, 'f'), 'utf8'), 'x');
    } finally {
      umount2(t);
    }
    assert.equal(mountedAt(t), undefined);
    assert.deepEqual(readdirSync(t), []);
  });

  test('an overlay merges lower and upper, writes go to upper', () => {
    const [l1, l2, upper, work, merged] = ['l1', 'l2', 'upper', 'work', 'merged'].map((n) => join(dir, 'ov', n));
    for (const d of [l1, l2, upper, work, merged]) mkdirSync(d, { recursive: true });
    writeFileSync(join(l1, 'a'), 'from l1');
    writeFileSync(join(l2, 'a'), 'from l2');
    writeFileSync(join(l2, 'b'), 'only l2');
    // containerd's shape: lowerdir lists the nearest layer first.
    mountAll({ type: 'overlay', source: 'overlay', options: ['index=off', `workdir=${work}`, `upperdir=${upper}`, `lowerdir=${l1}:${l2}`] }, merged);
    try {
      assert.equal(readFileSync(join(merged, 'a'), 'utf8'), 'from l1');
      assert.equal(readFileSync(join(merged, 'b'), 'utf8'), 'only l2');
      writeFileSync(join(merged, 'c'), 'new');
      assert.equal(readFileSync(join(upper, 'c'), 'utf8'), 'new');
    } finally {
      umount2(merged);
    }
  });

  test('a deep overlay chain whose lowerdir exceeds a page mounts from the layers folder', () => {
    const root = join(dir, 'deep', 'snapshots');
    const layers: string[] = [];
    for (let i = 1; i <= 130; i++) {
      const fs = join(root, String(i), 'fs');
      mkdirSync(fs, { recursive: true });
      writeFileSync(join(fs, `f${i}`), String(i));
      layers.unshift(fs);
    }
    const upper = join(dir, 'deep', 'upper');
    const work = join(dir, 'deep', 'work');
    const merged = join(dir, 'deep', 'merged');
    for (const d of [upper, work, merged]) mkdirSync(d);
    const cwd = process.cwd();
    const options = [`workdir=${work}`, `upperdir=${upper}`, `lowerdir=${layers.join(':')}`];
    assert.ok(options.join(',').length > 4096, 'the option must not fit a page as written');
    mountAll({ type: 'overlay', source: 'overlay', options }, merged);
    try {
      assert.equal(readFileSync(join(merged, 'f1'), 'utf8'), '1');
      assert.equal(readFileSync(join(merged, 'f130'), 'utf8'), '130');
      assert.equal(readdirSync(merged).length, 130);
    } finally {
      umount2(merged);
    }
    assert.equal(process.cwd(), cwd, "the mount's working directory was its own thread's");
  });

  test('a read-only bind reads through and refuses writes', () => {
    const src = join(dir, 'bindsrc');
    const t = join(dir, 'bindro');
    mkdirSync(src);
    mkdirSync(t);
    writeFileSync(join(src, 'f'), 'bound');
    mountAll({ type: 'bind', source: src, options: ['rbind', 'ro'] }, t);
    try {
      assert.equal(readFileSync(join(t, 'f'), 'utf8'), 'bound');
      assert.match(mountedAt(t) ?? '', / ro[, ]/);
      assert.throws(() => writeFileSync(join(t, 'g'), 'x'), { code: 'EROFS' });
    } finally {
      umount2(t);
    }
    writeFileSync(join(src, 'g'), 'still writable at the source');
  });

  test('errors are Node-style system errors', () => {
    const missing = join(dir, 'no-such-dir');
    assert.throws(() => mount('tmpfs', missing, 'tmpfs', 0, null), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'ENOENT');
      assert.equal(e.errno, -2);
      assert.equal(e.syscall, 'mount');
      assert.equal(e.path, missing);
      assert.equal(e.message, `ENOENT: no such file or directory, mount '${missing}'`);
      return true;
    });
    assert.throws(() => umount2(dir), { code: 'EINVAL', syscall: 'umount2' });
    assert.throws(() => mount('tmpfs', dir, 'no-such-fs', 0, null), { code: 'ENODEV' });
    assert.throws(() => mount('tmpfs', 'a\0b', 'tmpfs', 0, null), { name: 'TypeError' });
  });

  test('mount options parse as containerd parses them', () => {
    assert.deepEqual(parseMountOptions(['rbind', 'ro', 'nosuid', 'lowerdir=/a:/b', 'index=off']), {
      flags: MS.BIND | MS.REC | MS.RDONLY | MS.NOSUID,
      data: 'lowerdir=/a:/b,index=off',
    });
    assert.deepEqual(parseMountOptions(['ro', 'rw', 'defaults']), { flags: 0, data: '' });
  });
});

describe('device nodes', () => {
  test('a FIFO and a character device like /dev/null', () => {
    const fifo = join(dir, 'fifo');
    mknod(fifo, S_IF.FIFO | 0o640);
    const f = lstatSync(fifo);
    assert.ok(f.isFIFO());
    assert.equal(f.mode & 0o7777, 0o640 & ~process.umask());

    const chr = join(dir, 'null');
    mknod(chr, S_IF.CHR | 0o666, makedev(1, 3));
    const c = lstatSync(chr);
    assert.ok(c.isCharacterDevice());
    assert.equal(c.rdev, lstatSync('/dev/null').rdev);
    assert.equal(major(c.rdev), 1);
    assert.equal(minor(c.rdev), 3);

    const blk = join(dir, 'blk');
    mknod(blk, S_IF.BLK | 0o600, makedev(259, 70000));
    const b = lstatSync(blk, { bigint: true });
    assert.ok(b.isBlockDevice());
    assert.equal(major(b.rdev), 259);
    assert.equal(minor(b.rdev), 70000);

    assert.throws(() => mknod(chr, S_IF.CHR | 0o666, makedev(1, 3)), { code: 'EEXIST', syscall: 'mknod' });
  });

  test('makedev round-trips large numbers', () => {
    for (const [ma, mi] of [[0, 0], [4095, 255], [4096, 256], [0xfffff, 0xfffff], [2 ** 21 - 1, 2 ** 32 - 1]]) {
      const d = makedev(ma, mi);
      assert.deepEqual([major(d), minor(d)], [ma, mi]);
    }
  });
});

describe('xattrs', () => {
  // A capability set as setcap writes it (VFS_CAP_REVISION_2, cap_net_bind_service=ep): binary, with NULs.
  const cap = Buffer.from('0100000200040000000000000000000000000000', 'hex');

  test('round trip on a file: user.*, trusted.*, security.capability, overlay opaque', () => {
    const f = join(dir, 'xf');
    writeFileSync(f, '');
    lsetxattr(f, 'user.note', 'hello');
    lsetxattr(f, 'trusted.overlay.opaque', 'y');
    lsetxattr(f, 'security.capability', cap);
    lsetxattr(f, 'user.empty', Buffer.alloc(0));
    assert.equal(lgetxattr(f, 'user.note').toString(), 'hello');
    assert.equal(lgetxattr(f, 'trusted.overlay.opaque').toString(), 'y');
    assert.deepEqual(lgetxattr(f, 'security.capability'), cap);
    assert.equal(lgetxattr(f, 'user.empty').length, 0);
    assert.deepEqual(llistxattr(f).sort(), ['security.capability', 'trusted.overlay.opaque', 'user.empty', 'user.note']);
    lremovexattr(f, 'user.note');
    assert.throws(() => lgetxattr(f, 'user.note'), { code: 'ENODATA', syscall: 'lgetxattr' });
    assert.throws(() => lsetxattr(f, 'user.empty', 'x', 1 /* XATTR_CREATE */), { code: 'EEXIST' });
  });

  test('on a symlink itself, not its target', () => {
    const target = join(dir, 'xtarget');
    const link = join(dir, 'xlink');
    writeFileSync(target, '');
    symlinkSync(target, link);
    lsetxattr(link, 'trusted.overlay.opaque', 'y');
    lsetxattr(link, 'trusted.big', Buffer.alloc(3000, 7));
    assert.equal(lgetxattr(link, 'trusted.overlay.opaque').toString(), 'y');
    assert.equal(lgetxattr(link, 'trusted.big').length, 3000);
    assert.deepEqual(llistxattr(target), []);
    // Linux allows user.* only on regular files and folders.
    assert.throws(() => lsetxattr(link, 'user.x', 'y'), { code: 'EPERM' });
  });
});

describe('times', () => {
  test('nanosecond atime and mtime on a symlink itself', () => {
    const target = join(dir, 'ttarget');
    const link = join(dir, 'tlink');
    writeFileSync(target, '');
    symlinkSync('ttarget', link);
    const before = lstatSync(target, { bigint: true });
    const atime = 1_234_567_890_123_456_789n;
    const mtime = 1_700_000_000_987_654_321n;
    utimensat(link, atime, mtime);
    const s = lstatSync(link, { bigint: true });
    assert.equal(s.atimeNs, atime);
    assert.equal(s.mtimeNs, mtime);
    assert.equal(lstatSync(target, { bigint: true }).mtimeNs, before.mtimeNs, 'the target is untouched');

    // null leaves a time as it is; a time before 1970 keeps its nanoseconds.
    utimensat(link, null, -1_500_000_001n);
    const t = lstatSync(link, { bigint: true });
    assert.equal(t.atimeNs, atime);
    assert.equal(t.mtimeNs, -1_500_000_001n);
  });

  test("Node's lutimes cannot do what utimensat does", () => {
    const f = join(dir, 'tnode');
    writeFileSync(f, '');
    const mtime = 1_700_000_000_987_654_321n;
    utimensat(f, mtime, mtime);
    assert.equal(lstatSync(f, { bigint: true }).mtimeNs, mtime);
    // The same time through fs.lutimesSync (seconds as a double) comes out different.
    const g = join(dir, 'tnode2');
    writeFileSync(g, '');
    lutimesSync(g, Number(mtime) / 1e9, Number(mtime) / 1e9);
    assert.notEqual(lstatSync(g, { bigint: true }).mtimeNs, mtime);
  });
});
