// Paths inside a root filesystem that no entry of a layer can lead out of.
//
// Semantics: layer application needs "resolved inside the root", not "refused": an image is a
// whole filesystem whose absolute symlinks mean the image's own paths (merged-/usr images ship
// `bin -> usr/bin`, others `/etc/alternatives/...` or `lib -> /usr/lib`), and a later entry such
// as `bin/sh` or `lib/x` must land where the container will see it. So, as containerd's unpacker
// does (continuity's fs.RootPath, the filepath-securejoin idea): the root acts as `/`, an
// absolute symlink restarts at the root, `..` stops at the root, and a component that does not
// exist yet is taken literally (it is about to be created). The kernel does the same walk with
// openat2(RESOLVE_IN_ROOT), race-free, for paths that exist; openBeneath() is the strict kind
// (EXDEV on any escape) for callers that want a refusal instead.
import { readlinkSync, lstatSync, realpathSync } from 'node:fs';
import { addon } from './addon.js';

/** openat2's resolve flags (linux/openat2.h). */
export const RESOLVE = {
  NO_XDEV: 0x01,
  NO_MAGICLINKS: 0x02,
  NO_SYMLINKS: 0x04,
  BENEATH: 0x08,
  IN_ROOT: 0x10,
  CACHED: 0x20,
} as const;

/** open(2) flags Node's fs.constants lacks. */
export const O = { PATH: 0o10000000, DIRECTORY: 0o200000, NOFOLLOW: 0o400000, CLOEXEC: 0o2000000 } as const;

const AT_FDCWD = -100;
const MAX_LINKS = 255; // as continuity: a chain longer than this is a loop

/** openat2(2) as is; the fd is close-on-exec. Close it with fs.closeSync. */
export function openat2(dirfd: number, path: string, flags: number, mode = 0, resolve = 0): number {
  return addon.openat2(dirfd, path, flags, mode, resolve);
}

/** An O_PATH fd of a root folder, to resolve paths in with openInRoot / openBeneath. */
export function openRoot(root: string): number {
  return addon.openat2(AT_FDCWD, root, O.PATH | O.DIRECTORY, 0, 0);
}

/**
 * Opens `path` as if `rootFd` were `/`: symlinks (absolute or with `..`) cannot leave it. The
 * kernel does the walk, so a concurrent rename cannot race it. /proc magic links are refused.
 * Missing components are ENOENT (use resolveInRoot for paths about to be created).
 */
export function openInRoot(rootFd: number, path: string, flags: number, mode = 0): number {
  return addon.openat2(rootFd, path, flags, mode, RESOLVE.IN_ROOT | RESOLVE.NO_MAGICLINKS);
}

/** Opens `path` below `dirfd`, failing with EXDEV if any step (`..`, an absolute or escaping symlink) would leave it. */
export function openBeneath(dirfd: number, path: string, flags: number, mode = 0): number {
  return addon.openat2(dirfd, path, flags, mode, RESOLVE.BENEATH | RESOLVE.NO_MAGICLINKS);
}

/**
 * A path Node's fs functions accept for an open fd (`/proc/self/fd/N`); with a directory fd from
 * openInRoot, `${fdPath(dir)}/${name}` names `name` in that very directory, whatever happens to
 * the path that led there.
 */
export function fdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/** Where an open fd points, as a path (for messages and for checking). */
export function pathOfFd(fd: number): string {
  return readlinkSync(fdPath(fd));
}

function eloop(path: string): Error {
  return Object.assign(new Error(`ELOOP: too many symbolic links encountered, resolveInRoot '${path}'`), {
    code: 'ELOOP',
    errno: -40,
    syscall: 'resolveInRoot',
    path,
  });
}

/**
 * The host path of `path` inside `root`, every symlink resolved within the root (see the top of
 * this file). The final component is followed too, as containerd's RootPath does; to create or
 * replace an entry, resolve its parent and join the base name, so the entry itself (maybe a
 * symlink) is never followed. ELOOP after 255 links; ENOTDIR when a file is used as a folder.
 *
 * `root` should be an absolute path; it is made canonical once here.
 */
export function resolveInRoot(root: string, path: string): string {
  const base = realpathSync.native(root);
  const prefix = base === '/' ? '' : base;
  const todo = path.split('/').reverse(); // a stack: next component last
  const done: string[] = [];
  let links = 0;
  while (todo.length) {
    const c = todo.pop()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      done.pop(); // at the root, `..` is the root
      continue;
    }
    const here = `${prefix}/${done.length ? done.join('/') + '/' : ''}${c}`;
    let link: string | null = null;
    try {
      if (lstatSync(here).isSymbolicLink()) link = readlinkSync(here);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (link === null) {
      done.push(c);
      continue;
    }
    if (++links > MAX_LINKS) throw eloop(path);
    if (link.startsWith('/')) done.length = 0;
    todo.push(...link.split('/').reverse());
  }
  return done.length ? `${prefix}/${done.join('/')}` : base;
}
