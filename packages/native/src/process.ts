// Process calls for the shim host: being a subreaper, seeing and reaping exits without stealing
// child_process's, pidfds and eventfds watched on the main loop.
import type { ChildProcess } from 'node:child_process';
import { addon, type ExitInfo, type WatchHandle } from './addon.js';

export type { ExitInfo };

/** prctl(PR_SET_CHILD_SUBREAPER): orphans below this process are reparented to it, not to pid 1. */
export function setChildSubreaper(on = true): void {
  addon.setChildSubreaper(on);
}

export function isChildSubreaper(): boolean {
  return addon.isChildSubreaper();
}

/**
 * waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT): the next exited child, still a zombie, or null. It
 * reaps nothing, so looking is always safe; see Reaper for who may then reap it.
 */
export function waitidPeek(): ExitInfo | null {
  return addon.waitidPeek();
}

export const WNOHANG = 1;

/** waitpid(pid, options): reaps `pid` (WNOHANG: null while it runs); null for a pid that is not our child. */
export function waitpid(pid: number, options = WNOHANG): ExitInfo | null {
  return addon.waitpid(pid, options);
}

/** pidfd_open(2): an fd for `pid` that turns readable when it exits and never names another process. */
export function pidfdOpen(pid: number): number {
  return addon.pidfdOpen(pid, 0);
}

export const EFD = { SEMAPHORE: 1, NONBLOCK: 0o4000 } as const;

/** eventfd(2), close-on-exec. For cgroup v1 OOM notices, write `<efd> <fd of memory.oom_control>` to cgroup.event_control. */
export function eventfd(initval = 0, flags: number = EFD.NONBLOCK): number {
  return addon.eventfd(initval, flags);
}

/** Reads (and resets) the counter; null if it is 0 on a non-blocking eventfd. */
export function eventfdRead(fd: number): bigint | null {
  return addon.eventfdRead(fd);
}

export function eventfdWrite(fd: number, value: number | bigint = 1): void {
  addon.eventfdWrite(fd, value);
}

export const POLL = { READABLE: 1, WRITABLE: 2, DISCONNECT: 4, PRIORITIZED: 8 } as const;

/**
 * Calls `onEvent` on the main loop while `fd` is ready (level-triggered: read or stop, or it
 * fires again). For fds Node cannot wrap as a stream: pidfds, eventfds. It keeps the process
 * alive until stop() unless unref()'d. stop() before closing the fd. libuv makes the fd
 * non-blocking (a read with nothing there is EAGAIN, not a stalled loop).
 */
export class Watch {
  #handle: WatchHandle | null;

  constructor(fd: number, onEvent: (err: Error | null, events: number) => void, events: number = POLL.READABLE) {
    this.#handle = addon.watchStart(fd, events, onEvent);
  }

  get active(): boolean {
    return this.#handle !== null;
  }

  stop(): void {
    if (this.#handle) addon.watchStop(this.#handle);
    this.#handle = null;
  }

  ref(): this {
    if (this.#handle) addon.watchRef(this.#handle, true);
    return this;
  }

  unref(): this {
    if (this.#handle) addon.watchRef(this.#handle, false);
    return this;
  }
}

/**
 * Starts `file` (found on PATH) with `args`, this process's environment and `stdio` as its fds
 * 0-2 (-1: /dev/null; others must be above 2), without fork(): see native.c. Nothing reaps it
 * but a Reaper: start it with `Reaper.spawn`, which hands its exit back.
 */
export function spawnProcess(file: string, args: readonly string[], stdio: readonly [number, number, number] = [-1, -1, -1]): number {
  return addon.spawn(file, [...args], [...stdio] as [number, number, number]);
}

/** pipe2(O_CLOEXEC): [read end, non-blocking; write end]. */
export function pipe(): [number, number] {
  return addon.pipe();
}

/**
 * Reaps exited processes that are not child_process children: the orphans a subreaper inherits
 * (a container's init once runc has exited) and processes started without child_process.
 *
 * libuv reaps each child_process child with waitpid(pid) and ignores ECHILD, so reaping one here
 * would lose its 'exit' event. So on SIGCHLD: peek (WNOWAIT), reap the pid only if it is not a
 * child_process child, and repeat. A child_process zombie at the head of the queue hides the ones
 * behind it until libuv has reaped it, so the scan comes back a moment later.
 *
 * Which pids are child_process children: those passed to track(), and those Node still holds a
 * handle for (process._getActiveHandles(); it omits unref()'d children, so track those).
 */
export class Reaper {
  readonly #onExit: (e: ExitInfo) => void;
  readonly #tracked = new Set<number>();
  /** processes of spawn(): their exits go to their callers, not to onExit */
  readonly #spawned = new Map<number, (e: ExitInfo) => void>();
  /** keeps the loop alive while a spawned process runs (a signal listener does not) */
  #keep: NodeJS.Timeout | null = null;
  #retry: NodeJS.Timeout | null = null;
  #started = false;
  readonly #scan = () => this.scan();

  constructor(onExit: (e: ExitInfo) => void) {
    this.#onExit = onExit;
  }

  /** Starts listening for SIGCHLD (and scans once for exits that came before). */
  start(): this {
    if (!this.#started) {
      this.#started = true;
      process.on('SIGCHLD', this.#scan);
      this.scan();
    }
    return this;
  }

  stop(): void {
    this.#started = false;
    process.off('SIGCHLD', this.#scan);
    if (this.#keep) clearInterval(this.#keep);
    this.#keep = null;
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = null;
  }

  /** Marks a child_process child as libuv's to reap, until its 'exit'. */
  track(child: ChildProcess): ChildProcess {
    const pid = child.pid;
    if (pid !== undefined) {
      this.#tracked.add(pid);
      child.once('exit', () => this.#tracked.delete(pid));
    }
    return child;
  }

  /**
   * Starts a process as spawnProcess does and resolves with its exit. The Reaper must be
   * started: it reaps the process like any other that is not a child_process child, and its exit
   * cannot come before the caller knows the pid (exits are handled on the event loop).
   */
  spawn(file: string, args: readonly string[], stdio: readonly [number, number, number] = [-1, -1, -1]): Promise<ExitInfo> {
    const pid = spawnProcess(file, args, stdio);
    this.#keep ??= setInterval(this.#scan, 1000);
    return new Promise((resolve) => this.#spawned.set(pid, resolve));
  }

  isChildProcess(pid: number): boolean {
    if (this.#tracked.has(pid)) return true;
    const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
    return handles.some((h) => (h as { pid?: unknown; constructor?: { name?: string } }).constructor?.name === 'ChildProcess' && (h as { pid?: number }).pid === pid);
  }

  /** Reaps every exited process that is ours to reap; called on SIGCHLD. */
  scan(): void {
    if (!this.#started) return;
    for (;;) {
      const next = addon.waitidPeek();
      if (!next) return;
      if (this.isChildProcess(next.pid)) {
        // libuv reaps it on this same SIGCHLD; look again once it has.
        this.#retry ??= setTimeout(() => {
          this.#retry = null;
          this.scan();
        }, 1).unref();
        return;
      }
      const reaped = addon.waitpid(next.pid, WNOHANG);
      if (!reaped) continue;
      const waiter = this.#spawned.get(reaped.pid);
      if (waiter) {
        this.#spawned.delete(reaped.pid);
        if (!this.#spawned.size && this.#keep) {
          clearInterval(this.#keep);
          this.#keep = null;
        }
        waiter(reaped);
      } else this.#onExit(reaped);
    }
  }
}
