// containerd's Tasks API (services/tasks/local.go with runtime/v2's task manager) over shims:
// a task is a container's shim, found by namespace and id; every call goes to the shim over
// ttrpc. Which shim runs a container is the runtime name's choice (runtimes.ts). The tasks
// service keeps a record per created task (so a task whose bundle vanished, as on a reboot, is
// still reported exited) and the marks that keep a forwarded event from being published twice.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fromAny, nowTimestamp, type Any, type Timestamp } from '@berth/api';
import { faultPoint, type Outbox } from '@berth/bus';
import { BerthError, Code, alreadyExists, invalidArgument, isCode, taskNotFound, unimplemented } from '@berth/errdefs';
import { parseAll } from '@berth/filters';
import { validateIdentifier } from '@berth/identifiers';
import { key, prefix, unescapePart, type Store } from '@berth/store';
import type { Bundles, BundleInfo } from './bundle.js';
import type { ShimHost } from './host.js';
import { chooseRuntime } from './runtimes.js';
import { ShimTask } from './shimtask.js';
import { deleteStock, openShimLog, startStock, type Exit, type ShimEnv } from './stock.js';

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface Container {
  id: string;
  runtime: { name: string; options: Any | null } | null;
  spec: Any | null;
  snapshotter: string;
  snapshot_key: string;
}

/** What the tasks service asks other services (over the bus in the service, faked in tests). */
export interface Peers {
  container(ns: string, id: string): Promise<Container>;
  mounts(ns: string, snapshotter: string, key: string): Promise<Mount[]>;
}

export interface CreateRequest {
  container_id: string;
  rootfs: Mount[];
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  checkpoint: { media_type: string; digest: string; size: number } | null;
  options: Any | null;
  runtime_path: string;
}

export interface Process {
  id: string;
  pid: number;
  status: string;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  exit_status: number;
  exited_at: Timestamp | null;
}

interface TaskRecord extends BundleInfo {
  created_at: Timestamp;
}

export interface TasksOptions {
  store: Store;
  outbox: Outbox;
  bundles: Bundles;
  host?: ShimHost;
  runtimes: Record<string, string>;
  shimEnv: ShimEnv;
  peers: Peers;
  log: (m: string) => void;
}

const taskKey = (ns: string, id: string) => key('task', ns, id);
/** an init exit already published: by pid, so a retried or recovered exit goes out once */
const exitKey = (ns: string, id: string, pid: number) => key('exit', ns, id, String(pid));
const seenKey = (ns: string, id: string, topic: string, ts: string) => key('seen', ns, id, topic, ts);

/** containers remembered as existing at most (a forgotten one is looked up again) */
const maxKnown = 10_000;

/** a shim that is gone answers like containerd's ErrNotFound on State */
const gone = (e: unknown) => isCode(e, Code.Unavailable) || isCode(e, Code.NotFound);

function tsKey(t: Timestamp | null | undefined): string {
  return `${t?.seconds ?? 0}.${String(t?.nanos ?? 0).padStart(9, '0')}`;
}

export class Tasks {
  private readonly tasks = new Map<string, ShimTask>();
  private readonly creating = new Set<string>();
  /** shims of deleted tasks still shutting down (markEnding): a create of the same id waits for its own */
  private readonly ending = new Map<string, Promise<void>>();
  /** containers known to exist (see get), oldest first */
  private readonly known = new Map<string, true>();
  /** container deletes heard so far: a lookup that overlapped one does not mark its container known */
  private deletions = 0;
  private stopping = false;

  constructor(private readonly o: TasksOptions) {}

  private k(ns: string, id: string): string {
    return `${ns}\u0000${id}`;
  }

  /**
   * containerd's getTask: the container first (its NotFound), then its task. A container found
   * once is known to exist until the containers service says it was deleted (containerDeleted,
   * before that Delete answers): so calls on a task, and the NotFound of a task already deleted,
   * ask the containers service nothing, and every call after a container's delete still meets
   * the container's NotFound.
   */
  private async get(ns: string, id: string): Promise<ShimTask> {
    await this.containerExists(ns, id);
    const t = this.tasks.get(this.k(ns, id));
    if (!t) throw taskNotFound(id);
    return t;
  }

  private async containerExists(ns: string, id: string): Promise<void> {
    const k = this.k(ns, id);
    if (this.known.has(k)) return;
    const epoch = this.deletions;
    await this.o.peers.container(ns, id);
    this.saw(k, epoch);
  }

  /** A container found: known from now on, unless a container delete came in since the lookup began. */
  private saw(k: string, epoch: number): void {
    if (epoch !== this.deletions) return;
    this.known.delete(k); // (re)inserted last: the oldest go first
    this.known.set(k, true);
    if (this.known.size > maxKnown) this.known.delete(this.known.keys().next().value!);
  }

  /** The containers service deleted a container. */
  containerDeleted(ns: string, id: string): void {
    this.deletions++;
    this.known.delete(this.k(ns, id));
  }

  /** A container delete may have gone unheard (cut off from NATS): every container is looked up again. */
  containersUnknown(): void {
    this.deletions++;
    this.known.clear();
  }

  /**
   * A call that only reads a task (Get, Wait): its shim is asked while the container is looked
   * up, one round trip less when the container is not known yet. The container's NotFound still
   * wins, as containerd's getTask gives it first; `abort` then ends the shim call.
   */
  private async reading<T>(ns: string, id: string, fn: (t: ShimTask) => Promise<T>, abort?: AbortController): Promise<T> {
    if (this.known.has(this.k(ns, id))) return fn(await this.get(ns, id));
    const container = this.containerExists(ns, id);
    const t = this.tasks.get(this.k(ns, id));
    if (!t) {
      await container;
      throw taskNotFound(id);
    }
    const r = fn(t);
    r.catch(() => undefined); // the container's failure is the answer then
    try {
      await container;
    } catch (e) {
      abort?.abort(e);
      throw e;
    }
    return r;
  }

  /** A process of the task: the init process, or an exec that the shim knows. */
  private async process(ns: string, id: string, execId: string): Promise<ShimTask> {
    const t = await this.get(ns, id);
    if (execId) await t.call('State', { id, exec_id: execId });
    return t;
  }

  /** `held`: the container's record as the caller already holds it (not asked for again) */
  async create(ns: string, r: CreateRequest, held?: Container): Promise<{ container_id: string; pid: number }> {
    const id = r.container_id;
    const trace = process.env.BERTH_TASKS_TRACE ? (what: string, t0: number) => this.o.log(`trace create ${id} ${what} ${(performance.now() - t0).toFixed(1)} ms`) : undefined;
    let t0 = performance.now();
    const epoch = this.deletions;
    const container = held ?? (await this.o.peers.container(ns, id));
    trace?.('container', t0);
    t0 = performance.now();
    if (r.checkpoint) {
      if (r.checkpoint.media_type !== 'application/vnd.containerd.container.criu.checkpoint.criu.tar') {
        throw new BerthError(Code.Unknown, `unsupported checkpoint type "${r.checkpoint.media_type}"`);
      }
      throw unimplemented('restore from a checkpoint image: no criu on this node');
    }
    const runtime = r.runtime_path || container.runtime?.name || '';
    const k = this.k(ns, id);
    if (this.tasks.has(k) || this.creating.has(k)) throw alreadyExists(`task ${id}`);
    this.creating.add(k);
    try {
      await this.ending.get(k);
      const choice = chooseRuntime(runtime, this.o.runtimes, !!this.o.host);
      const info: BundleInfo = { namespace: ns, id, kind: choice.kind, binary: choice.binary, runtime };
      const mounts = r.rootfs?.length ? r.rootfs : container.snapshot_key ? await this.o.peers.mounts(ns, container.snapshotter, container.snapshot_key) : [];
      // marks of an earlier task of this container must not hide this one's events: gone before
      // the shim's Create (its first event), looked for while the shim is readied
      const forgotten = this.forget(ns, id);
      forgotten.catch(() => undefined);
      let bundle: string;
      try {
        bundle = this.o.bundles.create(info, container.spec?.value ?? new Uint8Array());
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw alreadyExists(`task ${id}`);
        throw e;
      }
      const t = new ShimTask(info, bundle, (x) => void this.lost(x));
      t.stdio = { stdin: r.stdin ?? '', stdout: r.stdout ?? '', stderr: r.stderr ?? '', terminal: !!r.terminal };
      trace?.('bundle', t0);
      t0 = performance.now();
      const options = r.options ?? container.runtime?.options ?? null;
      try {
        let address: string;
        if (choice.kind === 'stock') {
          t.log = openShimLog(bundle, true, (l) => this.o.log(`shim ${ns}/${id}: ${l}`));
          address = await startStock(choice.binary, this.o.shimEnv, ns, id, bundle, options);
        } else {
          address = await this.o.host!.start({ id, namespace: ns, bundle, options });
        }
        trace?.('shim start', t0);
        t0 = performance.now();
        await t.connect(address);
        await forgotten;
        trace?.('connect', t0);
        t0 = performance.now();
        const created = await t
          .call<{ pid: number }>('Create', {
            id,
            bundle,
            rootfs: mounts,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            checkpoint: '',
            options,
          })
          .catch((e) => {
            throw e instanceof BerthError ? e.wrap('failed to create shim task') : e;
          });
        trace?.('shim create', t0);
        t0 = performance.now();
        await this.o.store.transact([taskKey(ns, id)], async (tx) => {
          tx.put(taskKey(ns, id), { ...info, created_at: nowTimestamp() } satisfies TaskRecord);
        });
        trace?.('record', t0);
        this.saw(k, epoch);
        this.tasks.set(k, t);
        return { container_id: id, pid: created.pid };
      } catch (e) {
        await this.endShim(t).catch((err) => this.o.log(`cleanup of failed create ${ns}/${id}: ${(err as Error).message}`));
        throw e;
      }
    } finally {
      this.creating.delete(k);
    }
  }

  /** Ends a shim the tasks service is done with: delete its task, shut it down, remove the bundle. */
  private async endShim(t: ShimTask): Promise<void> {
    t.deleting = true;
    try {
      await t.call('Delete', { id: t.id }, { timeoutMs: 10_000 }).catch(() => undefined);
      await t.call('Shutdown', { id: t.id, now: false }, { timeoutMs: 3000 }).catch(() => undefined);
    } catch {
      // no connection: the shim is not there to end
    }
    t.close();
    if (t.info.kind === 'stock') await deleteStock(t.info.binary, this.o.shimEnv, t.namespace, t.id, t.bundle).catch(() => undefined);
    await this.o.bundles.remove(t.namespace, t.id);
  }

  async start(ns: string, id: string, execId: string): Promise<{ pid: number }> {
    const t = await this.process(ns, id, execId);
    return { pid: (await t.call<{ pid: number }>('Start', { id, exec_id: execId })).pid };
  }

  async delete(ns: string, id: string): Promise<{ pid: number; exit_status: number; exited_at: Timestamp | null }> {
    const t = await this.get(ns, id);
    if (t.deleting) throw taskNotFound(id);
    t.deleting = true;
    let res: Exit | undefined;
    let shimErr: unknown;
    try {
      res = await t.call<Exit>('Delete', { id });
    } catch (e) {
      shimErr = e;
      if (!gone(e)) {
        t.deleting = false;
        throw e;
      }
    }
    // the bundle moves away and the record goes together. The answer does not wait for the shim's
    // Shutdown (a round trip of 3-5 ms to a host busy with the container's last events and
    // unmount): a create of the same id waits for it instead, and the moved bundle keeps its files
    // (its `address`) until the shim is told, so a crash in between leaves the way to it
    const k = this.k(ns, id);
    const shutdown = this.markEnding(k);
    const removed = Promise.all([
      this.o.bundles.remove(ns, id, shutdown.ended).catch((e) => this.o.log(`remove bundle ${ns}/${id}: ${(e as Error).message}`)),
      this.o.store.transact([taskKey(ns, id)], async (tx) => tx.del(taskKey(ns, id))),
    ]);
    void removed
      .then(() => {
        // a crash test's point: the task is gone, its shim not yet told (recover ends such shims)
        faultPoint('tasks-delete-before-shutdown');
        return t.call('Shutdown', { id, now: false }, { timeoutMs: 3000 });
      })
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => {
        t.close();
        shutdown.done();
      });
    try {
      await removed;
    } finally {
      this.tasks.delete(k);
    }
    if (shimErr) throw shimErr;
    return { pid: res!.pid, exit_status: res!.exit_status, exited_at: res!.exited_at };
  }

  async deleteProcess(ns: string, id: string, execId: string): Promise<{ id: string; pid: number; exit_status: number; exited_at: Timestamp | null }> {
    const t = await this.process(ns, id, execId);
    const res = await t.call<Exit>('Delete', { id, exec_id: execId });
    return { id: execId, pid: res.pid, exit_status: res.exit_status, exited_at: res.exited_at };
  }

  private async state(t: ShimTask, execId = ''): Promise<Process> {
    if (!execId && t.final) return t.final;
    let s: any;
    try {
      s = await t.call('State', { id: t.id, exec_id: execId }, { timeoutMs: 2000 });
    } catch (e) {
      if (isCode(e, Code.NotFound)) throw e;
      // containerd logs and answers what it has: an unknown process
      this.o.log(`get state for ${execId || t.id}: ${(e as Error).message}`);
      s = {};
    }
    return {
      id: execId || t.id,
      pid: s.pid ?? 0,
      status: s.status ?? 'UNKNOWN',
      stdin: s.stdin ?? '',
      stdout: s.stdout ?? '',
      stderr: s.stderr ?? '',
      terminal: s.terminal ?? false,
      exit_status: s.exit_status ?? 0,
      exited_at: s.exited_at ?? null,
    };
  }

  async getProcess(ns: string, id: string, execId: string): Promise<Process> {
    return this.reading(ns, id, (t) => this.state(t, execId));
  }

  private inNamespace(ns: string): ShimTask[] {
    return [...this.tasks.values()].filter((t) => t.namespace === ns && !t.deleting);
  }

  async list(ns: string): Promise<Process[]> {
    const all = await Promise.all(this.inNamespace(ns).map((t) => this.state(t).catch(() => undefined)));
    return all.filter((p): p is Process => !!p);
  }

  async pause(ns: string, id: string): Promise<void> {
    await (await this.get(ns, id)).call('Pause', { id });
  }

  async resume(ns: string, id: string): Promise<void> {
    await (await this.get(ns, id)).call('Resume', { id });
  }

  async kill(ns: string, id: string, execId: string, signal: number, all: boolean): Promise<void> {
    const t = await this.process(ns, id, execId);
    await t.call('Kill', { id, exec_id: execId, signal, all });
  }

  async listPids(ns: string, id: string): Promise<{ processes: { pid: number; info: Any | null }[] }> {
    const t = await this.get(ns, id);
    const res = await t.call<{ processes: { pid: number; info: Any | null }[] }>('Pids', { id });
    return { processes: res.processes ?? [] };
  }

  async exec(ns: string, r: { container_id: string; exec_id: string; stdin: string; stdout: string; stderr: string; terminal: boolean; spec: Any | null }): Promise<void> {
    if (!r.exec_id) throw new BerthError(Code.InvalidArgument, 'exec id cannot be empty');
    const t = await this.get(ns, r.container_id);
    try {
      validateIdentifier(r.exec_id);
    } catch (e) {
      throw (e as BerthError).wrap(`invalid exec id ${r.exec_id}`);
    }
    await t.call('Exec', { id: r.container_id, exec_id: r.exec_id, stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal, spec: r.spec });
  }

  async resizePty(ns: string, id: string, execId: string, width: number, height: number): Promise<void> {
    const t = await this.process(ns, id, execId);
    await t.call('ResizePty', { id, exec_id: execId, width, height });
  }

  async closeIO(ns: string, id: string, execId: string, stdin: boolean): Promise<void> {
    const t = await this.process(ns, id, execId);
    if (stdin) await t.call('CloseIO', { id, exec_id: execId, stdin: true });
  }

  async checkpoint(ns: string, id: string, options: Any | null): Promise<{ descriptors: unknown[] }> {
    const t = await this.get(ns, id);
    let imagePath = '';
    if (options) {
      imagePath = (fromAny(options) as { image_path?: string }).image_path ?? '';
    }
    // the checkpoint goes where the caller said; into the content store is not built yet
    if (!imagePath) throw unimplemented('checkpoint into the content store (give CheckpointOptions.image_path)');
    await t.call('Checkpoint', { id, path: imagePath, options });
    return { descriptors: [] };
  }

  async update(ns: string, id: string, resources: Any | null, annotations: Record<string, string>): Promise<void> {
    await (await this.get(ns, id)).call('Update', { id, resources, annotations });
  }

  async metrics(ns: string, filters: string[]): Promise<{ metrics: { timestamp: Timestamp; id: string; data: Any | null }[] }> {
    let f;
    try {
      f = parseAll(filters);
    } catch (e) {
      throw invalidArgument((e as Error).message);
    }
    const chosen = this.inNamespace(ns).filter((t) =>
      f.match({ field: (path) => (path[0] === 'id' ? t.id : path[0] === 'namespace' ? t.namespace : undefined) }),
    );
    const out = await Promise.all(
      chosen.map(async (t) => {
        const timestamp = nowTimestamp();
        try {
          const s = await t.call<{ stats: Any | null }>('Stats', { id: t.id });
          return { timestamp, id: t.id, data: s.stats };
        } catch (e) {
          if (!isCode(e, Code.NotFound)) this.o.log(`collecting metrics for ${t.id}: ${(e as Error).message}`);
          return undefined;
        }
      }),
    );
    return { metrics: out.filter((m): m is NonNullable<typeof m> => !!m) };
  }

  async wait(ns: string, id: string, execId: string, signal?: AbortSignal): Promise<{ exit_status: number; exited_at: Timestamp | null }> {
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal!.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await this.reading(
        ns,
        id,
        async (t) => {
          if (execId) await t.call('State', { id, exec_id: execId });
          // containerd asks the shim's Connect (the task's pid) before its Wait: both go out at
          // once here, and Connect's failure is still the answer when it fails
          const connected = execId ? undefined : t.call('Connect', { id });
          const waited = t.call<{ exit_status: number; exited_at: Timestamp | null }>('Wait', { id, exec_id: execId }, { signal: ac.signal });
          if (connected) {
            waited.catch(() => undefined);
            try {
              await connected;
            } catch (e) {
              ac.abort(e);
              throw e;
            }
          }
          const res = await waited;
          return { exit_status: res.exit_status, exited_at: res.exited_at };
        },
        ac,
      );
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  // ---- events the shims forward, and what happens when a shim is gone ----

  /**
   * Commits a forwarded event to the outbox once: the shim retries until it is answered, so a
   * retry of an event already committed is answered without a second copy. An init process's
   * exit is marked by pid, so an exit the tasks service reported itself (recovery) is not doubled.
   */
  async forwarded(env: { timestamp: Timestamp; namespace: string; topic: string; event: Any }, event: Record<string, any> | undefined): Promise<void> {
    const cid = String(event?.container_id ?? '');
    const dk =
      env.topic === '/tasks/exit' && event && event.id === cid ? exitKey(env.namespace, cid, event.pid ?? 0) : seenKey(env.namespace, cid, env.topic, tsKey(env.timestamp));
    await this.o.store.transact([dk], async (tx) => {
      if (await tx.get(dk)) return;
      tx.put(dk, { at: tsKey(env.timestamp), status: event?.exit_status ?? 0 });
      this.o.outbox.forward(tx, env);
    });
    if (env.topic === '/tasks/exit' && event && event.id === cid) {
      // the shim has this state already: it reports an exit after it recorded it
      const t = this.tasks.get(this.k(env.namespace, cid));
      if (t?.stdio && !t.deleting) t.final = { id: cid, pid: event.pid ?? 0, status: 'STOPPED', ...t.stdio, exit_status: event.exit_status ?? 0, exited_at: event.exited_at ?? null };
    }
  }

  /** Drops the marks of a container's earlier task. */
  private async forget(ns: string, id: string): Promise<void> {
    const dels: string[] = [];
    await Promise.all(
      [prefix('exit', ns, id), prefix('seen', ns, id)].map(async (p) => {
        for await (const [k] of this.o.store.entries(p)) dels.push(k);
      }),
    );
    if (dels.length) await this.o.store.batch(dels.map((k) => ({ type: 'del' as const, key: k })));
  }

  /**
   * An exit (unless already reported) and the delete, for a task whose shim is gone, as
   * containerd's cleanupAfterDeadShim reports them; then the task is forgotten.
   */
  private async reportGone(ns: string, id: string, exit: Exit | undefined): Promise<void> {
    const pid = exit?.pid ?? 0;
    const status = exit?.exit_status ?? 255;
    const exitedAt = exit?.exited_at ?? nowTimestamp();
    const ek = exitKey(ns, id, pid);
    await this.o.store.transact([ek, taskKey(ns, id)], async (tx) => {
      const marks: string[] = [];
      for await (const [k] of this.o.store.entries(prefix('exit', ns, id))) marks.push(k);
      if (!marks.length) this.o.outbox.emit(tx, ns, '/tasks/exit', { container_id: id, id, pid, exit_status: status, exited_at: exitedAt });
      this.o.outbox.emit(tx, ns, '/tasks/delete', { container_id: id, pid, exit_status: status, exited_at: exitedAt });
      tx.del(taskKey(ns, id));
      for (const m of marks) tx.del(m);
    });
    await this.forget(ns, id);
  }

  /** A shim connection dropped without a delete: find out whether the shim is gone. */
  private async lost(t: ShimTask): Promise<void> {
    if (this.stopping) return;
    for (let attempt = 0; attempt < 20; attempt++) {
      if (this.stopping || t.deleting) return;
      if (t.info.kind === 'berth') {
        // the host restarts and adopts its containers again: wait for it, then ask
        const served = await this.o.host?.containers();
        if (served?.has(`${t.namespace}/${t.id}`)) return;
        if (served === undefined) {
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
      }
      try {
        await t.connect();
        return; // a passing drop: connected again
      } catch {
        if (t.info.kind === 'stock') break;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    if (t.deleting) return;
    t.deleting = true;
    this.o.log(`shim of ${t.namespace}/${t.id} is gone: cleaning up`);
    this.tasks.delete(this.k(t.namespace, t.id));
    t.close();
    const exit = t.info.kind === 'stock' ? await deleteStock(t.info.binary, this.o.shimEnv, t.namespace, t.id, t.bundle).catch(() => undefined) : undefined;
    await this.reportGone(t.namespace, t.id, exit ?? (t.info.kind === 'berth' ? { pid: 0, exit_status: 137, exited_at: nowTimestamp() } : undefined));
    await this.o.bundles.remove(t.namespace, t.id).catch((e) => this.o.log(`remove bundle ${t.namespace}/${t.id}: ${(e as Error).message}`));
  }

  /**
   * After a restart: the tasks recorded are served again at once (shims are connected lazily);
   * a task whose bundle is gone (a reboot emptied the state folder) is reported exited; a bundle
   * without a record (a create cut short) is cleaned up. Then, in the background, each shim is
   * asked once for its state, so an exit that happened while the service was down is reported.
   */
  async recover(): Promise<{ served: number; sweep: Promise<void> }> {
    const records: TaskRecord[] = [];
    for await (const [, r] of this.o.store.entries<TaskRecord>(prefix('task'))) records.push(r);
    const known = new Set<string>();
    const vanished: TaskRecord[] = [];
    for (const r of records) {
      known.add(this.k(r.namespace, r.id));
      if (!this.o.bundles.exists(r.namespace, r.id)) {
        vanished.push(r);
        continue;
      }
      const t = new ShimTask(r, this.o.bundles.path(r.namespace, r.id), (x) => void this.lost(x));
      // as containerd's loadShim: the stock shim's log has a reader again
      if (r.kind === 'stock') t.log = openShimLog(t.bundle, false, (l) => this.o.log(`shim ${r.namespace}/${r.id}: ${l}`));
      this.tasks.set(this.k(r.namespace, r.id), t);
    }
    const orphans = this.o.bundles.list().filter((b) => !known.has(this.k(b.namespace, b.id)));
    // a create of a leftover's id waits until its shim is told: the new task may get the same
    // socket, which that late Shutdown would end under it
    const leftovers = this.o.bundles.leftovers().map((path) => {
      const info = this.o.bundles.infoAt(path);
      return { path, info, ending: info && this.markEnding(this.k(info.namespace, info.id)) };
    });
    const sweep = (async () => {
      for (const l of leftovers) await this.endLeftover(l.path, l.info).finally(() => l.ending?.done());
      for (const r of vanished) {
        this.o.log(`task ${r.namespace}/${r.id}: bundle gone (reboot?): reported exited`);
        await this.reportGone(r.namespace, r.id, undefined);
        await this.o.bundles.remove(r.namespace, r.id).catch(() => undefined);
      }
      for (const b of orphans) {
        const info = this.o.bundles.info(b.namespace, b.id);
        this.o.log(`bundle ${b.namespace}/${b.id} has no task: removing it`);
        const t = new ShimTask(info ?? { ...b, kind: 'stock', binary: '', runtime: '' }, this.o.bundles.path(b.namespace, b.id), () => undefined);
        await this.endShim(t).catch((e) => this.o.log(`cleanup of ${b.namespace}/${b.id}: ${(e as Error).message}`));
      }
      await this.endUnclaimed();
      await this.purgeMarks();
      await pool([...this.tasks.values()], 32, (t) => this.check(t));
    })().catch((e) => this.o.log(`recovery: ${(e as Error).message}`));
    return { served: this.tasks.size, sweep };
  }

  /**
   * Marks a task's shim as ending (`k`: its namespace and id): a create of that id waits for
   * `done()`, and so may whatever waits for `ended` (a deleted bundle's files).
   */
  private markEnding(k: string): { ended: Promise<void>; done: () => void } {
    let resolve!: () => void;
    const ended = new Promise<void>((r) => (resolve = r));
    this.ending.set(k, ended);
    return {
      ended,
      done: () => {
        resolve();
        if (this.ending.get(k) === ended) this.ending.delete(k);
      },
    };
  }

  /**
   * A bundle a delete moved away whose files a crash kept: killed after the task's record went but
   * before its shim was told to shut down (Delete answers before that). Its `address` still leads
   * to that shim, stock or the host's; it is told now, then the files go.
   */
  private async endLeftover(path: string, info: BundleInfo | undefined): Promise<void> {
    if (info && existsSync(join(path, 'address'))) {
      this.o.log(`a deleted task's bundle is left (${info.namespace}/${info.id}): ending its shim`);
      const t = new ShimTask(info, path, () => undefined);
      t.deleting = true;
      await t.call('Shutdown', { id: info.id, now: false }, { timeoutMs: 3000 }).catch(() => undefined);
      t.close();
    }
    await this.o.bundles.discard(path).catch((e) => this.o.log(`remove ${path}: ${(e as Error).message}`));
  }

  /**
   * Containers the shim host serves with neither a task nor a bundle, left or live: one whose
   * Shutdown failed (the host was busy past the timeout) or was cut off another way. Asking the
   * host to start it again with its bundle's path gives its address back; then it is ended.
   */
  private async endUnclaimed(): Promise<void> {
    for (const key of (await this.o.host?.containers()) ?? []) {
      const cut = key.indexOf('/');
      const [ns, id] = [key.slice(0, cut), key.slice(cut + 1)];
      const k = this.k(ns, id);
      if (this.tasks.has(k) || this.creating.has(k) || this.o.bundles.exists(ns, id)) continue;
      this.o.log(`the shim host serves ${key}, which has no task: ending it`);
      const bundle = this.o.bundles.path(ns, id);
      const t = new ShimTask({ namespace: ns, id, kind: 'berth', binary: '', runtime: '' }, bundle, () => undefined);
      try {
        await t.connect(await this.o.host!.start({ id, namespace: ns, bundle, options: null }));
        await this.endShim(t);
      } catch (e) {
        this.o.log(`ending ${key}: ${(e as Error).message}`);
        t.close();
      }
    }
  }

  /** Marks of containers without a task (late retries after a delete) go. */
  private async purgeMarks(): Promise<void> {
    const dels: string[] = [];
    for (const kind of ['exit', 'seen']) {
      for await (const [k] of this.o.store.entries(prefix(kind))) {
        const [, ns = '', id = ''] = k.split('/').map(unescapePart);
        if (!this.tasks.has(this.k(ns, id))) dels.push(k);
      }
    }
    if (dels.length) await this.o.store.batch(dels.map((k) => ({ type: 'del' as const, key: k })));
  }

  /** One shim's state after a restart: a stopped init whose exit was never published is published now. */
  private async check(t: ShimTask): Promise<void> {
    let s: Process;
    try {
      s = await this.state(t);
    } catch (e) {
      if (gone(e)) void this.lost(t);
      return;
    }
    if (s.status !== 'STOPPED') return;
    const ek = exitKey(t.namespace, t.id, s.pid);
    await this.o.store.transact([ek], async (tx) => {
      if (await tx.get(ek)) return;
      tx.put(ek, { at: tsKey(s.exited_at), status: s.exit_status });
      this.o.outbox.emit(tx, t.namespace, '/tasks/exit', { container_id: t.id, id: t.id, pid: s.pid, exit_status: s.exit_status, exited_at: s.exited_at });
    });
  }

  /** The service stops; shims and their containers keep running. */
  close(): void {
    this.stopping = true;
    for (const t of this.tasks.values()) t.close();
  }
}

async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]!).catch(() => undefined);
    }),
  );
}
