// Filesystem calls for the snapshotter and layer application: mounts (as a containerd Mount
// record describes them), device nodes, xattrs and nanosecond times. Ownership is fs.lchown's.
import { resolve as resolvePath, dirname } from 'node:path';
import { addon } from './addon.js';

/** mount(2) flags (linux/mount.h). */
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOSYMFOLLOW: 0x100,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  SILENT: 0x8000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
} as const;

/** umount2(2) flags. */
export const MNT = { FORCE: 1, DETACH: 2, EXPIRE: 4, NOFOLLOW: 8 } as const;

export function mount(source: string | null, target: string, fstype: string | null, flags = 0, data: string | null = null): void {
  addon.mount(source, target, fstype, flags, data, null);
}

export function umount2(target: string, flags = 0): void {
  addon.umount2(target, flags);
}

/** A mount as containerd's API carries it (types.Mount): what ctr prints and runc receives. */
export interface MountSpec {
  type: string;
  source: string;
  options: string[];
}

// containerd's option words: [clears the flag?, flag]. Anything else is fs data (lowerdir=...).
const optionFlags: Record<string, [boolean, number]> = {
  async: [true, MS.SYNCHRONOUS],
  atime: [true, MS.NOATIME],
  bind: [false, MS.BIND],
  defaults: [false, 0],
  dev: [true, MS.NODEV],
  diratime: [true, MS.NODIRATIME],
  dirsync: [false, MS.DIRSYNC],
  exec: [true, MS.NOEXEC],
  mand: [false, MS.MANDLOCK],
  noatime: [false, MS.NOATIME],
  nodev: [false, MS.NODEV],
  nodiratime: [false, MS.NODIRATIME],
  noexec: [false, MS.NOEXEC],
  nomand: [true, MS.MANDLOCK],
  norelatime: [true, MS.RELATIME],
  nostrictatime: [true, MS.STRICTATIME],
  nosuid: [false, MS.NOSUID],
  rbind: [false, MS.BIND | MS.REC],
  relatime: [false, MS.RELATIME],
  remount: [false, MS.REMOUNT],
  ro: [false, MS.RDONLY],
  rw: [true, MS.RDONLY],
  strictatime: [false, MS.STRICTATIME],
  suid: [true, MS.NOSUID],
  sync: [false, MS.SYNCHRONOUS],
  shared: [false, MS.SHARED],
  rshared: [false, MS.SHARED | MS.REC],
  private: [false, MS.PRIVATE],
  rprivate: [false, MS.PRIVATE | MS.REC],
  slave: [false, MS.SLAVE],
  rslave: [false, MS.SLAVE | MS.REC],
  unbindable: [false, MS.UNBINDABLE],
  runbindable: [false, MS.UNBINDABLE | MS.REC],
};

export function parseMountOptions(options: readonly string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = optionFlags[o];
    if (f && f[1] !== 0) flags = f[0] ? flags & ~f[1] : flags | f[1];
    else if (!f) data.push(o);
  }
  return { flags, data: data.join(',') };
}

const PAGE = 4096;

// A deep overlay chain's lowerdir option outgrows the page mount(2) accepts. Like containerd,
// name the layers relative to the folder that holds them all and mount from there.
function compactLowerdir(options: readonly string[]): { dir: string | null; options: string[] } {
  const at = options.findIndex((o) => o.startsWith('lowerdir='));
  if (at < 0) return { dir: null, options: [...options] };
  const dirs = options[at].slice('lowerdir='.length).split(':');
  if (dirs.length < 2) return { dir: null, options: [...options] };
  let common = dirs[0];
  for (const d of dirs) while (!d.startsWith(common)) common = common.slice(0, -1);
  // Back up to a whole folder above the snapshots' own (ids share digits: ".../snapshots/1").
  common = dirname(common.endsWith('/') ? common.slice(0, -1) + 'x' : common);
  if (common === '/' || common === '.') return { dir: null, options: [...options] };
  const rel = dirs.map((d) => d.slice(common.length + 1));
  return { dir: common, options: [...options.slice(0, at), ...options.slice(at + 1), `lowerdir=${rel.join(':')}`] };
}

/**
 * Mounts `m` on `target` as containerd's Mount.Mount does: propagation flags in a second call,
 * a read-only bind remounted read-only (the kernel ignores MS_RDONLY on the first bind), and a
 * too-long overlay lowerdir made relative.
 */
export function mountAll(m: MountSpec, target: string): void {
  target = resolvePath(target);
  let dir: string | null = null;
  let options = m.options;
  if (m.type === 'overlay' && options.reduce((n, o) => n + o.length + 1, 0) >= PAGE - 512) {
    ({ dir, options } = compactLowerdir(options));
  }
  const { flags, data } = parseMountOptions(options);
  if (data.length > PAGE) throw Object.assign(new Error(`mount options is too long (${data.length} bytes)`), { code: 'E2BIG' });
  const propagation = MS.SHARED | MS.PRIVATE | MS.SLAVE | MS.UNBINDABLE;
  const own = flags & ~propagation;
  if ((flags & MS.REMOUNT) === 0 || data !== '') {
    addon.mount(m.source, target, m.type, own, data || null, dir);
  }
  if (flags & propagation) {
    addon.mount('', target, '', flags & (propagation | MS.REC | MS.SILENT), null, null);
  }
  if ((own & (MS.BIND | MS.RDONLY)) === (MS.BIND | MS.RDONLY)) {
    addon.mount('', target, '', own | MS.REMOUNT, null, null);
  }
}

/** Unmounts `target`; one that is not a mount point (EINVAL) is fine, as with containerd. */
export function unmount(target: string, flags = 0): void {
  try {
    addon.umount2(target, flags);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
  }
}

/** Unmounts every mount stacked on `target`. A missing `target` has none. */
export function unmountAll(target: string, flags = 0): void {
  for (;;) {
    try {
      addon.umount2(target, flags);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EINVAL' || code === 'ENOENT') return;
      throw e;
    }
  }
}

/** The file-type bits for mknod's mode (S_IFCHR | 0o666, ...). */
export const S_IF = { FIFO: 0o010000, CHR: 0o020000, BLK: 0o060000, REG: 0o100000 } as const;

/** mknod(2): a character or block device, or a FIFO. `dev` is makedev(major, minor). */
export function mknod(path: string, mode: number, dev: number | bigint = 0): void {
  addon.mknod(path, mode, dev);
}

/** glibc's makedev: the 12 low bits of the major in 8..19, the rest at 32 and up. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

export function major(dev: number | bigint): number {
  const d = BigInt(dev);
  return Number(((d >> 32n) & 0xfffff000n) | ((d >> 8n) & 0xfffn));
}

export function minor(dev: number | bigint): number {
  const d = BigInt(dev);
  return Number(((d >> 12n) & 0xffffff00n) | (d & 0xffn));
}

/** lsetxattr flags: fail if it exists / fail if it does not. */
export const XATTR = { CREATE: 1, REPLACE: 2 } as const;

/** Sets an xattr on `path` itself (a final symlink is not followed). */
export function lsetxattr(path: string, name: string, value: Buffer | string, flags = 0): void {
  addon.lsetxattr(path, name, typeof value === 'string' ? Buffer.from(value) : value, flags);
}

/** The value of an xattr of `path` itself; ENODATA when it has none of that name. */
export function lgetxattr(path: string, name: string): Buffer {
  return addon.lgetxattr(path, name);
}

export function llistxattr(path: string): string[] {
  return addon.llistxattr(path);
}

export function lremovexattr(path: string, name: string): void {
  addon.lremovexattr(path, name);
}

/** A time in nanoseconds since the epoch, or `null` to leave that time as it is (UTIME_OMIT). */
export type NsTime = bigint | null;

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const UTIME_OMIT = (1 << 30) - 2;
const NS = 1_000_000_000n;

function split(t: NsTime): [number, number] {
  if (t === null) return [0, UTIME_OMIT];
  // Floor division, so times before 1970 keep a non-negative nanosecond part.
  let s = t / NS;
  let n = t % NS;
  if (n < 0n) {
    n += NS;
    s -= 1n;
  }
  return [Number(s), Number(n)];
}

/**
 * Sets atime and mtime with nanoseconds. Node's fs.lutimes takes seconds as a double, which
 * keeps only about a quarter of a microsecond around today's dates: a tar's PAX mtime would not
 * round-trip. `followSymlinks: false` (the default) sets the times of a symlink itself.
 */
export function utimensat(path: string, atime: NsTime, mtime: NsTime, opts: { followSymlinks?: boolean; dirfd?: number } = {}): void {
  const [as, an] = split(atime);
  const [ms, mn] = split(mtime);
  addon.utimensat(opts.dirfd ?? AT_FDCWD, path, as, an, ms, mn, opts.followSymlinks ? 0 : AT_SYMLINK_NOFOLLOW);
}
