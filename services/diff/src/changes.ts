// The layer between two mounted trees, as containerd's walking differ writes it: both trees walked
// in the same order (continuity's doubleWalkDiff), each change turned into tar entries by
// archive.ChangeWriter: whiteouts for deletions, parents before children, hardlinks kept,
// security.capability as a PAX xattr, times truncated to seconds.
import { closeSync, constants, lstatSync, openSync, readdirSync, readlinkSync, readSync, statSync, type BigIntStats } from 'node:fs';
import { lgetxattr, major, minor, O } from '@berth/native';
import { T } from './tar.js';
import { tarEnd, tarHeader, tarPadding, type TarEntry } from './tarwriter.js';

interface Entry {
  /** `/a/b` */
  path: string;
  st: BigIntStats;
}

const NS = 1_000_000_000n;

/** Depth-first, names in byte order, the root itself left out (filepath.Walk's order). */
function walk(root: string): Entry[] {
  const out: Entry[] = [];
  const visit = (rel: string) => {
    const names = readdirSync(rel ? `${root}${rel}` : root).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const n of names) {
      const path = `${rel}/${n}`;
      const st = lstatSync(`${root}${path}`, { bigint: true });
      out.push({ path, st });
      if (st.isDirectory()) visit(path);
    }
  };
  visit('');
  return out;
}

/** continuity's directoryCompare: the separator sorts before every other byte. */
function directoryCompare(a: string, b: string): number {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  const l = Math.min(x.length, y.length);
  for (let i = 0; i < l; i++) {
    const c1 = x[i] === 0x2f ? 0 : x[i];
    const c2 = y[i] === 0x2f ? 0 : y[i];
    if (c1 !== c2) return c1 < c2 ? -1 : 1;
  }
  return x.length - y.length;
}

function capability(path: string): Buffer | null {
  try {
    return lgetxattr(path, 'security.capability');
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code;
    if (c === 'ENODATA' || c === 'ENOTSUP' || c === 'EOPNOTSUPP') return null;
    throw e;
  }
}

function sameContent(a: string, b: string): boolean {
  const fa = openSync(a, constants.O_RDONLY | O.NOFOLLOW);
  const fb = openSync(b, constants.O_RDONLY | O.NOFOLLOW);
  try {
    const ba = Buffer.allocUnsafe(1 << 16);
    const bb = Buffer.allocUnsafe(1 << 16);
    for (;;) {
      const na = readSync(fa, ba);
      const nb = readSync(fb, bb);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
      if (na === 0) return true;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

/** continuity's sameFile: metadata, capabilities, then size, mtime and (if times were truncated) content. */
function sameFile(lowerRoot: string, upperRoot: string, a: Entry, b: Entry): boolean {
  if (a.st.dev === b.st.dev && a.st.ino === b.st.ino) return true;
  if (a.st.mode !== b.st.mode || a.st.uid !== b.st.uid || a.st.gid !== b.st.gid || a.st.rdev !== b.st.rdev) return false;
  const ca = capability(lowerRoot + a.path);
  const cb = capability(upperRoot + b.path);
  if ((ca === null) !== (cb === null) || (ca && cb && !ca.equals(cb))) return false;
  if (a.st.isDirectory()) return true;
  if (a.st.size !== b.st.size) return false;
  const ta = a.st.mtimeNs;
  const tb = b.st.mtimeNs;
  if (ta / NS !== tb / NS) return false;
  if (ta % NS === 0n && tb % NS === 0n) {
    if (a.st.isSymbolicLink()) return readlinkSync(lowerRoot + a.path) === readlinkSync(upperRoot + b.path);
    if (a.st.size === 0n) return true;
    return sameContent(lowerRoot + a.path, upperRoot + b.path);
  }
  return ta % NS === tb % NS;
}

type Kind = 'add' | 'modify' | 'delete' | 'unmodified';

/** The changes from `lowerRoot` to `upperRoot` in walk order (doubleWalkDiff). */
export function* changes(lowerRoot: string, upperRoot: string): Generator<{ kind: Kind; path: string; st: BigIntStats | null }> {
  const lower = walk(lowerRoot);
  const upper = walk(upperRoot);
  let i = 0;
  let j = 0;
  let rmdir = '';
  while (i < lower.length || j < upper.length) {
    const a = lower[i];
    const b = upper[j];
    const cmp = !a ? 1 : !b ? -1 : directoryCompare(a.path, b.path);
    if (cmp > 0) {
      rmdir = '';
      j++;
      yield { kind: 'add', path: b!.path, st: b!.st };
    } else if (cmp < 0) {
      i++;
      if (rmdir && a!.path.startsWith(rmdir)) continue; // inside a folder already deleted
      rmdir = a!.st.isDirectory() ? `${a!.path}/` : '';
      yield { kind: 'delete', path: a!.path, st: null };
    } else {
      i++;
      j++;
      const same = sameFile(lowerRoot, upperRoot, a!, b!);
      rmdir = a!.st.isDirectory() && !b!.st.isDirectory() ? `${a!.path}/` : '';
      if (same) {
        if (!(b!.st.isFile() && b!.st.nlink > 1n)) continue;
        yield { kind: 'unmodified', path: b!.path, st: b!.st };
      } else yield { kind: 'modify', path: b!.path, st: b!.st };
    }
  }
}

/** The tar stream of the layer from `lowerRoot` to `upperRoot` (archive.WriteDiff). */
export async function* writeDiff(lowerRoot: string, upperRoot: string, now = new Date()): AsyncGenerator<Buffer> {
  const whiteoutT = BigInt(Math.round(now.getTime() / 1000)) * NS; // Go rounds a time ustar cannot hold
  const inodeSrc = new Map<bigint, string>();
  const inodeRefs = new Map<bigint, string[]>();
  const addedDirs = new Set<string>();
  // headers in the order they are made, each with the file whose data follows it
  const out: { hdr: Buffer; file?: { path: string; size: number } }[] = [];

  const includeParents = (name: string, isDir: boolean) => {
    const trimmed = name.replace(/\/+$/, '');
    const slash = trimmed.lastIndexOf('/');
    const parent = slash < 0 ? '' : trimmed.slice(0, slash);
    if (trimmed !== '' && parent !== '' && !addedDirs.has(parent)) {
      addedDirs.add(parent);
      handle('modify', parent, statSync(`${upperRoot}/${parent}`, { bigint: true }));
    }
    if (isDir) addedDirs.add(trimmed);
  };

  const handle = (kind: Kind, p: string, st: BigIntStats | null): void => {
    if (kind === 'delete') {
      const slash = p.lastIndexOf('/');
      const name = `${p.slice(0, slash + 1)}.wh.${p.slice(slash + 1)}`.replace(/^\//, '');
      includeParents(name, false);
      out.push({ hdr: tarHeader({ name, typeflag: T.reg, mode: 0, size: 0, mtime: whiteoutT }) });
      return;
    }
    const s = st!;
    if (s.isSocket()) return;
    let name = p.replace(/^\/+/, '');
    const e: TarEntry = { name, mode: Number(s.mode & 0o7777n), uid: Number(s.uid), gid: Number(s.gid), mtime: (s.mtimeNs / NS) * NS };
    if (s.isDirectory()) {
      e.typeflag = T.dir;
      if (!name.endsWith('/')) name += '/';
      e.name = name;
    } else if (s.isSymbolicLink()) {
      e.typeflag = T.symlink;
      e.linkname = readlinkSync(`${upperRoot}/${name}`);
    } else if (s.isCharacterDevice() || s.isBlockDevice()) {
      e.typeflag = s.isCharacterDevice() ? T.char : T.block;
      e.devmajor = major(s.rdev);
      e.devminor = minor(s.rdev);
    } else if (s.isFIFO()) e.typeflag = T.fifo;
    else {
      e.typeflag = T.reg;
      e.size = Number(s.size);
    }

    let extra: string[] = [];
    if (!s.isDirectory() && s.nlink > 1n) {
      const src = inodeSrc.get(s.ino);
      if (src !== undefined) {
        e.typeflag = T.link;
        e.linkname = src;
        e.size = 0;
      } else {
        if (kind === 'unmodified') {
          inodeRefs.set(s.ino, [...(inodeRefs.get(s.ino) ?? []), name]);
          return;
        }
        inodeSrc.set(s.ino, name);
        extra = inodeRefs.get(s.ino) ?? [];
        inodeRefs.delete(s.ino);
      }
    } else if (kind === 'unmodified') return;

    const cap = capability(`${upperRoot}/${name}`);
    if (cap && cap.length) e.xattrs = { 'security.capability': cap };
    includeParents(e.name, s.isDirectory());
    out.push({ hdr: tarHeader(e), file: e.typeflag === T.reg && (e.size ?? 0) > 0 ? { path: `${upperRoot}/${name}`, size: e.size! } : undefined });
    for (const x of extra) {
      includeParents(x, false);
      out.push({ hdr: tarHeader({ ...e, name: x, typeflag: T.link, linkname: e.name, size: 0 }) });
    }
  };

  for (const c of changes(lowerRoot, upperRoot)) {
    handle(c.kind, c.path, c.st);
    for (const { hdr, file } of out.splice(0)) {
      yield hdr;
      if (file) yield* fileData(file);
    }
  }
  yield tarEnd();
}

async function* fileData(f: { path: string; size: number }): AsyncGenerator<Buffer> {
  const fd = openSync(f.path, constants.O_RDONLY | O.NOFOLLOW);
  let n = 0;
  try {
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(f.size - n, 1)));
      const got = readSync(fd, buf, 0, buf.length, null);
      if (got === 0) break;
      n += got;
      if (n > f.size) break;
      yield buf.subarray(0, got);
    }
  } finally {
    closeSync(fd);
  }
  if (n !== f.size) throw new Error('short write copying file');
  yield tarPadding(f.size);
}
