// Loads the compiled addon. setup.sh builds it before `tsc -b`; if a developer changed native.c
// and only ran tsc, the stale or missing addon is rebuilt here (two stat calls when it is fresh),
// so no test ever runs against an old build of the C side.
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const pkg = fileURLToPath(new URL('..', import.meta.url));
export const addonPath = `${pkg}build/berth_native.node`;

function mtime(p: string): number {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -1;
  }
}

const require = createRequire(import.meta.url);
const built = mtime(addonPath);
if (built < 0 || built < mtime(`${pkg}src/native.c`) || built < mtime(`${pkg}scripts/build.sh`)) {
  // child_process only on this rare path: importing it costs every service a few ms.
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  execFileSync('bash', [`${pkg}scripts/build.sh`], { stdio: ['ignore', 'ignore', 'inherit'] });
}

export interface ExitInfo {
  pid: number;
  /** Exit status when the process exited, else null. */
  code: number | null;
  /** Number of the signal that killed it, else null. */
  signal: number | null;
}

export interface Received {
  data: Buffer;
  fds: number[];
  /** The sender passed more fds than asked for; the kernel closed the rest. */
  truncated: boolean;
}

declare const watchBrand: unique symbol;
export type WatchHandle = { readonly [watchBrand]: true };

/** The raw functions of native.c; the typed modules beside this one are the API. */
export interface Addon {
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null, dir: string | null): void;
  umount2(target: string, flags: number): void;
  mknod(path: string, mode: number, dev: number | bigint): void;
  lsetxattr(path: string, name: string, value: Buffer, flags: number): void;
  lgetxattr(path: string, name: string): Buffer;
  llistxattr(path: string): string[];
  lremovexattr(path: string, name: string): void;
  utimensat(dirfd: number, path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, flags: number): void;
  openat2(dirfd: number, path: string, flags: number, mode: number, resolve: number): number;
  setChildSubreaper(on: boolean): void;
  isChildSubreaper(): boolean;
  waitidPeek(): ExitInfo | null;
  waitpid(pid: number, options: number): ExitInfo | null;
  pidfdOpen(pid: number, flags: number): number;
  eventfd(initval: number, flags: number): number;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value: number | bigint): void;
  watchStart(fd: number, events: number, cb: (err: Error | null, events: number) => void): WatchHandle;
  watchStop(handle: WatchHandle): void;
  watchRef(handle: WatchHandle, on: boolean): void;
  unixListen(path: string, backlog: number): number;
  accept(fd: number): number | null;
  socketpair(): [number, number];
  recvmsg(fd: number, maxBytes: number, maxFds: number): Received | null;
  sendmsg(fd: number, data: Buffer, fds: number[]): number;
  setWinsize(fd: number, rows: number, cols: number): void;
  getWinsize(fd: number): { rows: number; cols: number };
  spawn(file: string, args: string[], stdio: [number, number, number]): number;
  pipe(): [number, number];
  mallocTrim(): boolean;
}

export const addon = require(addonPath) as Addon;
