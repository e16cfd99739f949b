// What every container command shares: a container by the name the user gave (docker's
// "No such container"), its task's state, stopping a task, and removing everything a
// container has (task, record, snapshot, log).
import { rmSync } from 'node:fs';
import { constants } from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import { nowTimestamp, type Any } from '@berth/api';
import { client, CommandError, isNotFound, unary } from '../grpc.js';

export const labels = {
  /** docker's stop signal from the image config, as ctr records it */
  stopSignal: 'io.containerd.image.config.stop-signal',
  /** the detached container's log file */
  log: 'berth.log-path',
  /** a task that is gone leaves its exit here, for `ps -a` */
  exitStatus: 'berth.exit-status',
  finishedAt: 'berth.finished-at',
} as const;

export interface Container {
  id: string;
  labels: Record<string, string>;
  image: string;
  spec: Any | null;
  snapshotter: string;
  snapshot_key: string;
  created_at: { seconds: number; nanos: number } | null;
}

export interface TaskProcess {
  id: string;
  container_id: string;
  pid: number;
  status: 'UNKNOWN' | 'CREATED' | 'RUNNING' | 'STOPPED' | 'PAUSED' | 'PAUSING';
  exit_status: number;
  exited_at: { seconds: number; nanos: number } | null;
}

export const noSuchContainer = (id: string) => new CommandError(`No such container: ${id}`);

export async function getContainer(c: grpc.Client, ns: string, id: string): Promise<Container> {
  try {
    return (await unary<{ container: Container }>(c, '/containerd.services.containers.v1.Containers/Get', { id }, ns)).container;
  } catch (e) {
    throw isNotFound(e) ? noSuchContainer(id) : e;
  }
}

export async function getTask(c: grpc.Client, ns: string, id: string): Promise<TaskProcess | undefined> {
  try {
    return (await unary<{ process: TaskProcess }>(c, '/containerd.services.tasks.v1.Tasks/Get', { container_id: id }, ns)).process;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

export const isLive = (t: TaskProcess | undefined) => !!t && t.status !== 'STOPPED' && t.status !== 'UNKNOWN' && t.status !== 'CREATED';

export function signalNumber(name: string | undefined): number {
  if (!name) return constants.signals.SIGTERM;
  if (/^\d+$/.test(name)) return Number(name);
  const n = (constants.signals as Record<string, number>)[name.startsWith('SIG') ? name : `SIG${name}`];
  if (!n) throw new CommandError(`invalid signal: ${name}`);
  return n;
}

/** Tasks.Wait without a deadline: resolves with the exit status. */
export function waitTask(c: grpc.Client, ns: string, id: string, execId = ''): Promise<number> {
  return unary<{ exit_status: number }>(c, '/containerd.services.tasks.v1.Tasks/Wait', { container_id: id, exec_id: execId }, ns).then((r) => r.exit_status);
}

export function kill(c: grpc.Client, ns: string, id: string, signal: number, all = false): Promise<unknown> {
  return unary(c, '/containerd.services.tasks.v1.Tasks/Kill', { container_id: id, exec_id: '', signal, all }, ns).catch((e) => {
    // it exited meanwhile
    if (!isNotFound(e)) throw e;
  });
}

/**
 * docker stop: the stop signal, then SIGKILL to every process after `seconds`; resolves with
 * the exit status.
 */
export async function stopTask(c: grpc.Client, ns: string, container: Container, seconds: number): Promise<number> {
  const waited = waitTask(c, ns, container.id);
  waited.catch(() => {});
  await kill(c, ns, container.id, signalNumber(container.labels[labels.stopSignal]));
  let t: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([waited.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), seconds * 1000)))]);
  clearTimeout(t);
  if (timedOut) await kill(c, ns, container.id, constants.signals.SIGKILL, true);
  return waited;
}

/** Deletes a stopped task and keeps its exit on the container record, as docker's state does. */
export async function retireTask(c: grpc.Client, ns: string, id: string): Promise<void> {
  let exit: { exit_status: number; exited_at: { seconds: number; nanos: number } | null };
  try {
    exit = await unary(c, '/containerd.services.tasks.v1.Tasks/Delete', { container_id: id }, ns);
  } catch (e) {
    if (isNotFound(e)) return;
    throw e;
  }
  const at = exit.exited_at ?? nowTimestamp();
  const finished = new Date(Number(at.seconds) * 1000 + Math.floor(at.nanos / 1e6)).toISOString();
  await unary(
    c,
    '/containerd.services.containers.v1.Containers/Update',
    { container: { id, labels: { [labels.exitStatus]: String(exit.exit_status), [labels.finishedAt]: finished } }, update_mask: { paths: [`labels.${labels.exitStatus}`, `labels.${labels.finishedAt}`] } },
    ns,
  );
}

/** Removes the task (killing it when `force`), the container, its snapshot and its log. */
export async function removeContainer(c: grpc.Client, ns: string, container: Container, force: boolean): Promise<void> {
  const task = await getTask(c, ns, container.id);
  if (task) {
    // a created task was never started: deleting it is enough, as with docker's Created
    if (isLive(task)) {
      if (!force) throw new CommandError(`You cannot remove a running container ${container.id}. Stop the container before attempting removal or force remove`);
      const waited = waitTask(c, ns, container.id);
      await kill(c, ns, container.id, constants.signals.SIGKILL, true);
      await waited.catch((e) => {
        if (!isNotFound(e)) throw e;
      });
    }
    await unary(c, '/containerd.services.tasks.v1.Tasks/Delete', { container_id: container.id }, ns).catch((e) => {
      if (!isNotFound(e)) throw e;
    });
  }
  await unary(c, '/containerd.services.containers.v1.Containers/Delete', { id: container.id }, ns).catch((e) => {
    if (!isNotFound(e)) throw e;
  });
  if (container.snapshot_key) {
    await unary(c, '/containerd.services.snapshots.v1.Snapshots/Remove', { snapshotter: container.snapshotter, key: container.snapshot_key }, ns).catch((e) => {
      if (!isNotFound(e)) throw e;
    });
  }
  const log = container.labels[labels.log];
  if (log) rmSync(log, { force: true });
}

/**
 * Docker's way with several containers: each one is tried, its id printed when done, its error
 * printed when not, and the command fails (status 1) if any did.
 */
export async function eachContainer(address: string, ids: string[], fn: (c: grpc.Client, id: string) => Promise<void>): Promise<void> {
  const c = client(address);
  let failures = 0;
  try {
    for (const id of ids) {
      try {
        await fn(c, id);
        process.stdout.write(`${id}\n`);
      } catch (e) {
        failures++;
        process.stderr.write(`berth: ${(e as Error).message}\n`);
      }
    }
  } finally {
    c.close();
  }
  if (failures) process.exitCode = 1;
}
