// Applies a layer (a tar stream) to a directory as containerd's archive.Apply does, confined to
// that directory.
//
// Confinement: every entry's parent is resolved inside the root (native resolveInRoot: absolute
// symlinks restart at the root, `..` stops there, as containerd's fs.RootPath), then opened with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) from the root's fd, so a symlink that appears
// after the resolution fails the open instead of leading out. Every change is made through that
// fd (`/proc/self/fd/N/<base>`) with calls that do not follow the final component (lstat,
// lchown, lsetxattr, utimensat NOFOLLOW, open O_NOFOLLOW|O_EXCL, mknod, symlink, link): nothing
// outside the root is created, changed or followed.
import { closeSync, fchmodSync, ftruncateSync, linkSync, lstatSync, lchownSync, mkdirSync, openSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeSync, chmodSync, constants, copyFileSync, type Stats, type BigIntStats } from 'node:fs';
import { realpathSync } from 'node:fs';
import { fdPath, lgetxattr, llistxattr, lsetxattr, makedev, mknod, openat2, openRoot, resolveInRoot, RESOLVE, O, S_IF, utimensat, XATTR } from '@berth/native';
import { T, type TarHeader, type TarReader } from './tar.js';

export interface ApplyOptions {
  /**
   * The root is an overlay upperdir: `.wh.` entries become overlay whiteouts (char 0/0) and
   * `.wh..wh..opq` the `trusted.overlay.opaque` xattr, instead of removals.
   */
  overlay?: boolean;
  /** The lowerdirs beneath that upperdir, top first: attributes of folders created on the way, files hardlinks lead to. */
  parents?: string[];
  /**
   * The lowerdirs are still being written (a pull applying a layer beside its parent's): an entry
   * whose result would depend on them (a folder made on the way, a hardlink to a lower file)
   * fails with LowersPending instead, so the caller applies the layer again once they are done.
   */
  lowersPending?: boolean;
  signal?: AbortSignal;
  /** warnings containerd logs (ignored xattrs, ...) */
  warn?: (msg: string) => void;
}

export class ApplyError extends Error {}

/** The layer needs its lowerdirs, which are not complete yet (ApplyOptions.lowersPending). */
export class LowersPending extends Error {
  constructor(what: string) {
    super(`layer needs its parent layers for ${what}, and they are still being applied`);
  }
}

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';
const MAX_NS = (1n << 63n) - 1n;
const BENEATH = RESOLVE.BENEATH | RESOLVE.NO_SYMLINKS | RESOLVE.NO_MAGICLINKS;

/** Go's filepath.Clean for slash paths. */
export function cleanPath(p: string): string {
  if (p === '') return '.';
  const abs = p.startsWith('/');
  const out: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length && out[out.length - 1] !== '..') out.pop();
      else if (!abs) out.push('..');
      continue;
    }
    out.push(c);
  }
  const s = out.join('/');
  return abs ? '/' + s : s || '.';
}

function splitPath(p: string): [string, string] {
  const i = p.lastIndexOf('/');
  return [p.slice(0, i + 1), p.slice(i + 1)];
}

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

function lstatOrNull(p: string): Stats | null;
function lstatOrNull(p: string, big: true): BigIntStats | null;
function lstatOrNull(p: string, big = false): Stats | BigIntStats | null {
  try {
    return big ? lstatSync(p, { bigint: true }) : lstatSync(p);
  } catch (e) {
    if (code(e) === 'ENOENT') return null;
    throw e;
  }
}

/** containerd's boundTime: times before 1970 or past int64 nanoseconds become the epoch. */
function bound(t: bigint): bigint {
  return t < 0n || t > MAX_NS ? 0n : t;
}

interface Parent {
  fd: number;
  /** path from the root, '' for the root itself */
  rel: string;
}

/** A directory tree being written: resolution and fds of parent folders. */
class Root {
  readonly fd: number;
  readonly path: string;
  /** parent folders by the archive's parent path; emptied whenever something is removed or a symlink made */
  private readonly parents = new Map<string, Parent>();

  constructor(root: string, private readonly lowers: string[], private readonly warn: (m: string) => void, private readonly lowersPending = false) {
    this.path = realpathSync.native(root);
    this.fd = openRoot(this.path);
  }

  close(): void {
    this.forget();
    closeSync(this.fd);
  }

  forget(): void {
    for (const p of this.parents.values()) if (p.fd !== this.fd) closeSync(p.fd);
    this.parents.clear();
  }

  /** `rel` (symlink-free, below the root) as a folder fd; ENOENT/ENOTDIR/ELOOP as openat2 says. */
  openDir(rel: string): number {
    return rel === '' ? this.fd : openat2(this.fd, rel, O.PATH | O.DIRECTORY | O.CLOEXEC, 0, BENEATH);
  }

  /** Where `ppath` (an archive's folder path) is inside the root, symlinks resolved within it. */
  resolve(ppath: string): string {
    let host: string;
    try {
      host = resolveInRoot(this.path, ppath);
    } catch (e) {
      if (code(e) === 'ELOOP') throw new ApplyError('failed to get root path: too many links');
      throw e;
    }
    if (host === this.path) return '';
    if (!host.startsWith(this.path + '/')) throw new ApplyError(`failed to get root path: ${ppath} resolves outside the root`);
    return host.slice(this.path.length + 1);
  }

  /** The folder `ppath` resolves to, or null when it does not exist (nothing is created). */
  lookup(ppath: string): Parent | null {
    const cached = this.parents.get(ppath);
    if (cached) return cached;
    const rel = this.resolve(ppath);
    try {
      return this.remember(ppath, { fd: this.openDir(rel), rel });
    } catch (e) {
      if (code(e) === 'ENOENT') return null;
      throw e;
    }
  }

  private remember(ppath: string, p: Parent): Parent {
    if (this.parents.size >= 512) this.forget();
    this.parents.set(ppath, p);
    return p;
  }

  /** The folder `ppath` resolves to, created (with its missing parents) when missing. */
  parent(ppath: string): Parent {
    let p = this.parents.get(ppath);
    if (p) return p;
    const rel = this.resolve(ppath);
    let fd: number;
    try {
      fd = this.openDir(rel);
    } catch (e) {
      if (code(e) !== 'ENOENT') throw e;
      fd = this.mkparent(rel);
    }
    return this.remember(ppath, { fd, rel });
  }

  /** containerd's mkparent: missing folders as 0755, or with the attributes of the same folder in a lower layer. */
  private mkparent(rel: string): number {
    const parts = rel.split('/');
    let fd = this.fd;
    for (let i = 0; i < parts.length; i++) {
      const sub = parts.slice(0, i + 1).join('/');
      let next: number;
      try {
        next = this.openDir(sub);
      } catch (e) {
        if (code(e) !== 'ENOENT') throw e;
        const at = `${fdPath(fd)}/${parts[i]}`;
        // its attributes come from the lower layers (checked before anything is made)
        this.needLowers(`folder ${sub}`);
        try {
          mkdirSync(at, 0o755);
          chmodSync(at, 0o755);
          this.copyDirInfo(sub, at);
        } catch (e2) {
          if (code(e2) !== 'EEXIST') throw e2;
        }
        next = this.openDir(sub);
      }
      if (fd !== this.fd) closeSync(fd);
      fd = next;
    }
    return fd;
  }

  private copyDirInfo(rel: string, at: string): void {
    for (const lower of this.lowers) {
      const src = resolveInRoot(lower, rel);
      const st = lstatOrNull(src, true);
      if (!st) continue;
      if (!st.isDirectory()) return; // replaced in that layer: keep the defaults
      lchownSync(at, Number(st.uid), Number(st.gid));
      chmodSync(at, Number(st.mode) & 0o7777);
      utimensat(at, st.atimeNs, st.mtimeNs);
      copyXattrs(src, at);
      return;
    }
  }

  /**
   * On an overlay upperdir, a hardlink may name a file of a lower layer: overlayfs would copy it
   * up before linking, so do the same (contents, owner, mode, xattrs, times) in the upperdir.
   */
  copyUp(ppath: string, base: string): boolean {
    this.needLowers(`link target ${ppath}${base}`);
    for (const lower of this.lowers) {
      const src = `${resolveInRoot(lower, ppath)}/${base}`;
      const st = lstatOrNull(src, true);
      if (!st) continue;
      if (st.isCharacterDevice() && st.rdev === 0n) return false; // whited out in that layer
      if (st.isDirectory()) return false;
      const dst = `${fdPath(this.parent(ppath).fd)}/${base}`;
      if (st.isSymbolicLink()) symlinkSync(readlinkSync(src), dst);
      else if (st.isFile()) copyFileSync(src, dst, constants.COPYFILE_EXCL);
      else mknod(dst, Number(st.mode), st.rdev);
      lchownSync(dst, Number(st.uid), Number(st.gid));
      copyXattrs(src, dst);
      if (!st.isSymbolicLink()) chmodSync(dst, Number(st.mode) & 0o7777);
      utimensat(dst, st.atimeNs, st.mtimeNs);
      return true;
    }
    return false;
  }

  /** A step whose result depends on the lower layers: refused while they are pending. */
  needLowers(what: string): void {
    if (this.lowersPending && this.lowers.length) throw new LowersPending(what);
  }

  warnings(m: string): void {
    this.warn(m);
  }
}

function copyXattrs(src: string, dst: string): void {
  let names: string[];
  try {
    names = llistxattr(src);
  } catch (e) {
    if (code(e) === 'ENOTSUP' || code(e) === 'ENODATA') return;
    throw e;
  }
  for (const n of names) {
    if (n.startsWith('trusted.')) continue; // overlay's own bookkeeping, never copied (as containerd)
    try {
      lsetxattr(dst, n, lgetxattr(src, n), XATTR.CREATE);
    } catch (e) {
      if (!['ENOTSUP', 'ENODATA', 'EEXIST'].includes(code(e) ?? '')) throw e;
    }
  }
}

/** Removes `at` and everything below it, without following symlinks; a missing one is fine. */
function removeAll(at: string): void {
  rmSync(at, { recursive: true, force: true });
}

/**
 * Applies every entry of `tar` to `root`. Returns the sum of the entries' sizes (containerd's
 * figure). Throws on the first entry that cannot be applied; what was applied before stays.
 */
export async function applyLayer(root: string, tar: TarReader, opts: ApplyOptions = {}): Promise<number> {
  const r = new Root(root, opts.parents ?? [], opts.warn ?? (() => {}), opts.lowersPending);
  const dirs: TarHeader[] = [];
  const unpacked = new Set<string>();
  let size = 0;
  try {
    for (;;) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new ApplyError('context canceled');
      const hdr = await tar.next();
      if (!hdr) break;
      size += hdr.size;
      const name = cleanPath(hdr.name);
      const [ppath, base] = splitPath(name);
      if (base === '' || base === '.' || base === '..') continue; // resolves to the root: ignored, as containerd
      let parent = r.parent(ppath);
      const rel = parent.rel ? `${parent.rel}/${base}` : base;
      let at = `${fdPath(parent.fd)}/${base}`;

      if (base.startsWith(WH)) {
        if (base !== OPAQUE) {
          const orig = base.slice(WH.length);
          if (orig === '' || orig === '.' || orig === '..' ) throw new ApplyError(`invalid whiteout name: ${base}: invalid archive`);
        }
        whiteout(r, parent, base, hdr, opts.overlay ?? false, unpacked);
        continue;
      }

      const existing = lstatOrNull(at);
      if (existing && !(existing.isDirectory() && hdr.typeflag === T.dir)) {
        removeAll(at);
        // what was below it is gone: resolve afresh
        r.forget();
        parent = r.parent(ppath);
        at = `${fdPath(parent.fd)}/${base}`;
      }
      // No resolution cached so far went through `at`: it did not exist (whatever was there
      // was removed above, and that forgot them all), so a new symlink here changes none.
      await createEntry(r, parent, base, at, hdr, tar, ppath);
      if (hdr.typeflag === T.dir) dirs.push(hdr);
      unpacked.add(rel);
    }
    // a folder's times last, after its contents stopped changing them
    for (const hdr of dirs) {
      const rel = r.resolve(cleanPath(hdr.name));
      const [pp, b] = splitPath(rel);
      const dfd = rel === '' ? r.fd : r.openDir(pp.replace(/\/$/, ''));
      try {
        utimensat(rel === '' ? '.' : b, bound(latest(hdr.atime, hdr.mtime)), bound(hdr.mtime), { dirfd: dfd });
      } finally {
        if (dfd !== r.fd) closeSync(dfd);
      }
    }
  } finally {
    r.close();
  }
  return size;
}

function latest(a: bigint | null, m: bigint): bigint {
  return a !== null && a > m ? a : m;
}

function whiteout(r: Root, parent: Parent, base: string, hdr: TarHeader, overlay: boolean, unpacked: Set<string>): void {
  const dirAt = `${fdPath(parent.fd)}/.`;
  if (base === OPAQUE) {
    if (overlay) {
      // on the upperdir itself it is the one change a pending apply could not undo by emptying
      // the folder (Differ.apply does that when it gives up on a layer): it waits, too
      if (parent.rel === '') r.needLowers('an opaque root');
      lsetxattr(dirAt, 'trusted.overlay.opaque', Buffer.from('y'));
      return;
    }
    // everything in the folder that this layer did not put there goes
    const walk = (relDir: string, fdDir: string) => {
      for (const n of readdirSync(fdDir)) {
        const rel = relDir ? `${relDir}/${n}` : n;
        const p = `${fdDir}/${n}`;
        if (!unpacked.has(rel)) removeAll(p);
        else if (lstatSync(p).isDirectory()) walk(rel, p);
      }
    };
    walk(parent.rel, fdPath(parent.fd));
    r.forget();
    return;
  }
  const orig = `${fdPath(parent.fd)}/${base.slice(WH.length)}`;
  if (overlay) {
    mknod(orig, S_IF.CHR, 0);
    lchownSync(orig, hdr.uid, hdr.gid);
  } else {
    removeAll(orig);
    r.forget();
  }
}

async function createEntry(r: Root, parent: Parent, base: string, at: string, hdr: TarHeader, tar: TarReader, ppath: string): Promise<void> {
  const mode = hdr.mode & 0o7777;
  switch (hdr.typeflag) {
    case T.dir: {
      const st = lstatOrNull(at);
      if (!st?.isDirectory()) {
        mkdirSync(at, mode);
        chmodSync(at, mode);
      }
      break;
    }
    case T.reg:
    case T.cont: {
      const fd = openSync(at, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | O.NOFOLLOW | O.CLOEXEC, mode);
      try {
        fchmodSync(fd, mode);
        let end = 0;
        for await (const { offset, chunk } of tar.data()) {
          let done = 0;
          while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done, offset + done);
          end = offset + chunk.length;
        }
        if (hdr.sparse && end < hdr.size) ftruncateSync(fd, hdr.size);
      } finally {
        closeSync(fd);
      }
      break;
    }
    case T.block:
    case T.char:
    case T.fifo: {
      const type = hdr.typeflag === T.block ? S_IF.BLK : hdr.typeflag === T.char ? S_IF.CHR : S_IF.FIFO;
      mknod(at, mode | type, makedev(hdr.devmajor, hdr.devminor));
      break;
    }
    case T.link: {
      // containerd's hardlinkRootPath: the target's folder resolved in the root, its last part not followed
      const [lp, lb] = splitPath(cleanPath(hdr.linkname));
      if (lb === '' || lb === '.' || lb === '..') throw new ApplyError(`link ${hdr.linkname} ${hdr.name}: operation not permitted`);
      const dir = r.lookup(lp);
      if (!(dir && lstatOrNull(`${fdPath(dir.fd)}/${lb}`)) && !r.copyUp(lp, lb)) {
        throw new ApplyError(`link ${hdr.linkname} ${hdr.name}: no such file or directory`);
      }
      linkSync(`${fdPath(r.lookup(lp)!.fd)}/${lb}`, at);
      break;
    }
    case T.symlink:
      symlinkSync(hdr.linkname, at);
      break;
    case T.paxGlobal:
      return;
    default:
      throw new ApplyError(`unhandled tar header type ${hdr.typeflag.charCodeAt(0)}`);
  }

  try {
    lchownSync(at, hdr.uid, hdr.gid);
  } catch (e) {
    throw new ApplyError(`failed to Lchown "${ppath}${base}" for UID ${hdr.uid}, GID ${hdr.gid}: ${(e as Error).message}`);
  }
  for (const [key, value] of hdr.xattrs) {
    if (key.startsWith('trusted.')) {
      // containerd refuses admin attributes from an archive (they would forge overlay whiteouts)
      r.warnings(`ignored xattr ${key} in archive: admin attributes from archive not supported`);
      continue;
    }
    try {
      lsetxattr(at, key, value);
    } catch (e) {
      const c = code(e);
      if (c === 'EPERM' && key.startsWith('user.')) {
        const st = lstatSync(at);
        if (!st.isFile() && !st.isDirectory()) {
          r.warnings(`ignored xattr ${key} in archive`);
          continue;
        }
      }
      if (c === 'ENOTSUP' || c === 'EOPNOTSUPP') {
        r.warnings(`ignored xattr ${key} in archive`);
        continue;
      }
      throw new ApplyError(`failed to setxattr "${ppath}${base}" for key "${key}": ${(e as Error).message}`);
    }
  }
  // after lchown, which clears setuid/setgid
  if (hdr.typeflag !== T.symlink) chmodSync(at, mode);
  utimensat(base, bound(latest(hdr.atime, hdr.mtime)), bound(hdr.mtime), { dirfd: parent.fd });
}
