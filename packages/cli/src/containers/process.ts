// Running one attached process (a container's init or an exec) to its end: stdio through FIFOs,
// a raw terminal with its size forwarded, signals forwarded when there is no terminal, and the
// exit status. Failures to start are worded with docker's exit statuses (125, 126, 127).
import { constants } from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import { CommandError, unary } from '../grpc.js';
import { Fifos } from './stdio.js';
import { waitTask } from './lifecycle.js';

/** docker's statuses for a process that could not start: 127 not found, 126 not runnable. */
export function startFailure(e: unknown): CommandError {
  const msg = (e as Error).message;
  const status = /no such file|not found/i.test(msg) ? 127 : /permission denied|exec format/i.test(msg) ? 126 : 125;
  return new CommandError(msg, status);
}

export interface Attach {
  c: grpc.Client;
  ns: string;
  id: string;
  execId: string;
  fifos: Fifos;
  /** a file that keeps a copy of the output (for `berth logs`) */
  log?: string;
  interactive: boolean;
  tty: boolean;
  /** Tasks.Start (or Exec's start) */
  start: () => Promise<unknown>;
}

/** Starts the created process, copies its stdio and resolves with its exit status. */
export async function runAttached(a: Attach): Promise<number> {
  const { c, ns, id, execId } = a;
  const waited = waitTask(c, ns, id, execId);
  waited.catch(() => {});
  const stdin = a.interactive ? process.stdin : null;
  a.fifos.attachOutput(process.stdout, process.stderr, a.log);
  const raw = a.tty && a.interactive && process.stdin.isTTY;
  if (raw) process.stdin.setRawMode(true);
  const cleanups: Array<() => void> = [];
  // docker's --sig-proxy (as ctr, without a terminal): the signals this command gets go to the
  // process; taken from before the start, so one that comes early is not this command's death
  let pending: number[] | null = [];
  const send = (signal: number) => void unary(c, '/containerd.services.tasks.v1.Tasks/Kill', { container_id: id, exec_id: execId, signal, all: false }, ns).catch(() => {});
  if (!a.tty) {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
      const h = () => (pending ? pending.push(constants.signals[sig]) : send(constants.signals[sig]));
      process.on(sig, h);
      cleanups.push(() => process.off(sig, h));
    }
  }
  try {
    try {
      await a.start();
    } catch (e) {
      throw startFailure(e);
    }
    for (const signal of pending) send(signal);
    pending = null;
    if (stdin) {
      a.fifos.attachInput(stdin, () => {
        unary(c, '/containerd.services.tasks.v1.Tasks/CloseIO', { container_id: id, exec_id: execId, stdin: true }, ns).catch(() => {});
      });
    }
    a.fifos.releaseHeld();
    if (a.tty && process.stdout.isTTY) {
      const resize = () =>
        unary(c, '/containerd.services.tasks.v1.Tasks/ResizePty', { container_id: id, exec_id: execId, width: process.stdout.columns, height: process.stdout.rows }, ns).catch(() => {});
      void resize();
      process.stdout.on('resize', resize);
      cleanups.push(() => process.stdout.off('resize', resize));
    }
    return await waited;
  } finally {
    for (const f of cleanups) f();
    if (raw) process.stdin.setRawMode(false);
    if (stdin) {
      stdin.unpipe();
      process.stdin.pause();
    }
  }
}
