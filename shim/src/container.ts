// One container served by the host: containerd's shim v2 Task API over its own ttrpc socket,
// runc for the work, the bundle for what survives a host restart.
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromAny, nowTimestamp, service, toAny, type Any, type Timestamp } from '@berth/api';
import { BerthError, Code, alreadyExists, failedPrecondition, invalidArgument, notFound, unimplemented } from '@berth/errdefs';
import { Watch, accept, pidfdOpen, recvmsg, unixListen, type Reaper } from '@berth/native';
import { mountAll, unmountAll } from '@berth/snapshot/mount';
import { TtrpcServer, serveService, type TypedHandler } from '@berth/ttrpc';
import { OomWatch, cgroupOf, metrics, oomKills, type CgroupPaths } from './cgroup.js';
import type { Forwarder } from './events.js';
import { Proc, startTimeOf, stillRuns, type ProcessRecord } from './process.js';
import { Runc } from './runc.js';
import { RecordFile } from './record.js';
import { ProcessIO, type Stdio } from './stdio.js';

const TASK = service('containerd.task.v2.Task');

/** What a container needs of the host that serves it. */
export interface HostContext {
  readonly stateDir: string;
  readonly reaper: Reaper;
  readonly forwarder: Forwarder;
  /** pid → process, for the reaper */
  bind(pid: number, c: Container, p: Proc): void;
  unbind(pid: number): void;
  /** an exit reaped before its pid was known (an exec that ended before runc returned) */
  claim(pid: number): { status: number; at: Timestamp } | undefined;
  release(c: Container): Promise<void>;
  log(msg: string): void;
}

export interface RuncOptions {
  no_pivot_root?: boolean;
  no_new_keyring?: boolean;
  binary_name?: string;
  root?: string;
  systemd_cgroup?: boolean;
  criu_path?: string;
}

interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** <bundle>/berth-shim.json */
interface BundleRecord {
  id: string;
  namespace: string;
  options: RuncOptions;
  /** runc's --root as used (the binary's `delete` needs it without a host) */
  runcRoot: string;
  rootfs: Mount[];
  mounted: boolean;
  cgroup: CgroupPaths;
  oomReported: number;
  killAllOnExit: boolean;
  /** the spec has poststop hooks (absent in records of older hosts: assumed) */
  poststop?: boolean;
  init: ProcessRecord;
  execs: ProcessRecord[];
}

export interface Registration {
  id: string;
  namespace: string;
  bundle: string;
  address: string;
  ttrpcAddress: string;
  /** unix socket path of this container's Task API */
  socket: string;
  options?: { type_url: string; value: string } | null;
}

// BERTH_SHIM_TRACE=1: each call's time in the log, to tell the host's own time from runc's
const trace = !!process.env.BERTH_SHIM_TRACE;

export class Container {
  readonly server = new TtrpcServer();
  readonly key: string;
  init: Proc | null = null;
  readonly execs = new Map<string, Proc>();
  private options: RuncOptions;
  private runc!: Runc;
  private rootfs: Mount[] = [];
  private mounted = false;
  private cgroup: CgroupPaths = {};
  private oom: OomWatch | null = null;
  private oomReported = 0;
  private killAllOnExit = false;
  /** poststop hooks run at `runc delete` and may look at the rootfs: it stays mounted until then */
  private poststop = true;
  private watches = new Map<Proc, Watch>();
  /** <bundle>/berth-shim.json */
  private readonly record: RecordFile;

  constructor(
    readonly reg: Registration,
    private readonly host: HostContext,
  ) {
    this.key = reg.socket.slice(reg.socket.lastIndexOf('/') + 1);
    this.options = decodeOptions(reg.options ?? undefined);
    this.makeRunc();
    this.record = new RecordFile(join(reg.bundle, 'berth-shim.json'));
  }

  get id(): string {
    return this.reg.id;
  }
  get namespace(): string {
    return this.reg.namespace;
  }
  get bundle(): string {
    return this.reg.bundle;
  }

  private makeRunc(): void {
    this.runc = new Runc(
      {
        binary: this.options.binary_name || 'runc',
        // not containerd's /run/containerd/runc: a containerd on the same machine would share it,
        // and the same namespace/id on both would collide
        root: join(this.options.root || join(this.host.stateDir, 'runc'), this.namespace),
        log: join(this.bundle, 'log.json'),
        systemdCgroup: !!this.options.systemd_cgroup,
      },
      this.host.reaper,
    );
  }

  async serve(): Promise<void> {
    const h: Record<string, TypedHandler> = {};
    for (const name of ['State', 'Create', 'Start', 'Delete', 'Pids', 'Pause', 'Resume', 'Checkpoint', 'Kill', 'Exec', 'ResizePty', 'CloseIO', 'Update', 'Wait', 'Stats', 'Connect', 'Shutdown'] as const) {
      h[name] = trace
        ? async (req) => {
            const t0 = performance.now();
            try {
              return await (this as any)[name](req);
            } finally {
              this.host.log(`trace: ${name} ${(performance.now() - t0).toFixed(1)} ms`);
            }
          }
        : (req) => (this as any)[name](req);
    }
    serveService(this.server, TASK, h);
    await this.server.listen(this.reg.socket);
  }

  private publish(topic: string, event: Record<string, unknown>): void {
    this.host.forwarder.publish(this.key, this.reg.ttrpcAddress, this.namespace, topic, event);
  }

  private checkId(id: string): void {
    if (id !== this.id) throw notFound('container not created');
  }

  private process(id: string, execId: string): Proc {
    this.checkId(id);
    if (!this.init || this.init.status === 'deleted') throw notFound('container not created');
    if (!execId) return this.init;
    const p = this.execs.get(execId);
    if (!p) throw notFound(`process ${execId} does not exist`);
    return p;
  }

  // --- persistence ---------------------------------------------------------------------------

  private persist(): void {
    if (!this.init) return;
    const rec: BundleRecord = {
      id: this.id,
      namespace: this.namespace,
      options: this.options,
      runcRoot: this.runc.config.root,
      rootfs: this.rootfs,
      mounted: this.mounted,
      cgroup: this.cgroup,
      oomReported: this.oomReported,
      killAllOnExit: this.killAllOnExit,
      poststop: this.poststop,
      init: this.init.record(),
      execs: [...this.execs.values()].map((p) => p.record()),
    };
    this.record.write(rec);
  }

  /**
   * Takes the container back after a host restart: processes whose pid and start time still
   * match are watched by pidfd; one that died meanwhile is reported exited with 255, as
   * containerd reports a process it lost (an exit the host reaped is in the record: it is written
   * in the same turn as the exit is reaped).
   */
  restore(): void {
    let rec: BundleRecord;
    try {
      rec = JSON.parse(readFileSync(join(this.bundle, 'berth-shim.json'), 'utf8'));
    } catch {
      return; // Start was called, Create never finished: nothing to take back
    }
    this.options = rec.options;
    this.makeRunc();
    this.rootfs = rec.rootfs;
    this.mounted = rec.mounted;
    this.cgroup = rec.cgroup;
    this.oomReported = rec.oomReported;
    this.killAllOnExit = rec.killAllOnExit;
    this.poststop = rec.poststop ?? true;
    const take = (r: ProcessRecord): Proc => {
      const p = new Proc(r.execId || this.id, r.execId, r.stdio);
      p.pid = r.pid;
      p.startTime = r.startTime;
      p.status = r.status;
      if (r.status === 'stopped' || r.status === 'deleted') p.setExited(r.exitStatus ?? 0, r.exitedAt ?? nowTimestamp());
      p.status = r.status;
      return p;
    };
    this.init = take(rec.init);
    for (const r of rec.execs) this.execs.set(r.execId, take(r));
    for (const p of [this.init, ...this.execs.values()]) {
      if (p.status === 'stopped' || p.status === 'deleted' || !p.pid) continue;
      if (stillRuns(p.pid, p.startTime)) this.adopt(p);
      else this.exitedWhileAway(p);
    }
    if (this.init.status !== 'stopped' && this.init.status !== 'deleted' && (this.cgroup.v1 || this.cgroup.v2)) this.watchOom();
    this.persist();
  }

  private adopt(p: Proc): void {
    p.adopted = true;
    this.host.bind(p.pid, this, p);
    try {
      const fd = pidfdOpen(p.pid);
      const w = new Watch(fd, () => {
        w.stop();
        this.watches.delete(p);
        closeFd(fd);
        // not our child: the status is unknowable, unless we sent the SIGKILL ourselves
        this.onExit(p, p.lastSignal === 9 ? 137 : 255, nowTimestamp());
      });
      w.unref();
      this.watches.set(p, w);
    } catch {
      this.exitedWhileAway(p);
    }
  }

  private exitedWhileAway(p: Proc): void {
    this.onExit(p, 255, nowTimestamp());
  }

  // --- exits ---------------------------------------------------------------------------------

  /** The reaper (or a pidfd) saw the process end. */
  onExit(p: Proc, status: number, at: Timestamp): void {
    if (p.status === 'stopped' || p.status === 'deleted') return;
    if (p.starting) {
      p.deferredExit = { status, at };
      return;
    }
    this.host.unbind(p.pid);
    if (p.isInit) {
      this.checkOom(); // an OOM kill's /tasks/oom always comes before its /tasks/exit
      this.oom?.stop();
      this.oom = null;
      if (this.killAllOnExit) void this.runc.run(['kill', '--all', this.id, '9']).catch(() => {});
    }
    p.setExited(status, at);
    this.persist();
    this.publish('/tasks/exit', { container_id: this.id, id: p.id, pid: p.pid, exit_status: status, exited_at: at });
  }

  private watchCgroup(init: Proc): void {
    if (this.init !== init || init.status === 'stopped' || init.status === 'deleted') return;
    try {
      this.cgroup = cgroupOf(init.pid);
      this.oomReported = oomKills(this.cgroup);
      this.watchOom();
      this.persist();
    } catch (e) {
      this.host.log(`cgroup of ${this.id}: ${(e as Error).message}`);
    }
  }

  private watchOom(): void {
    this.oom = new OomWatch(this.cgroup, () => this.checkOom());
  }

  private checkOom(): void {
    const n = oomKills(this.cgroup);
    if (n > this.oomReported) {
      this.oomReported = n;
      this.persist();
      this.publish('/tasks/oom', { container_id: this.id });
    }
  }

  // --- the Task API --------------------------------------------------------------------------

  async Create(req: any): Promise<any> {
    this.checkIdForCreate(req.id);
    if (this.init && this.init.status !== 'deleted') throw alreadyExists(`container ${req.id}`);
    if (req.checkpoint) throw unimplemented('restore from a checkpoint');
    if (req.bundle && req.bundle !== this.bundle) throw invalidArgument(`bundle ${req.bundle} is not ${this.bundle}`);
    if (req.options?.type_url) {
      this.options = decodeOptions(req.options);
      this.makeRunc();
    }
    const spec = JSON.parse(readFileSync(join(this.bundle, 'config.json'), 'utf8'));
    this.killAllOnExit = !(spec.linux?.namespaces ?? []).some((n: { type: string; path?: string }) => n.type === 'pid' && !n.path);
    this.poststop = (spec.hooks?.poststop ?? []).length > 0;
    const stdio: Stdio = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    const init = new Proc(this.id, '', stdio);
    this.rootfs = (req.rootfs ?? []).map((m: Mount) => ({ type: m.type, source: m.source, target: m.target, options: m.options }));
    const rootfs = join(this.bundle, 'rootfs');
    let consoleSock: number | null = null;
    let consolePath = '';
    try {
      if (this.rootfs.length) {
        mkdirSync(rootfs, { recursive: true, mode: 0o711 });
        this.mounted = true;
        mountAll(this.rootfs, rootfs);
      }
      init.io = await ProcessIO.open(stdio, { id: this.id, namespace: this.namespace, tmp: join(this.host.stateDir, 'tmp'), reaper: this.host.reaper });
      const args = ['create', '--bundle', this.bundle, '--pid-file', join(this.bundle, 'init.pid')];
      if (stdio.terminal) {
        ({ fd: consoleSock, path: consolePath } = this.consoleSocket());
        args.push('--console-socket', consolePath);
      }
      if (this.options.no_pivot_root) args.push('--no-pivot');
      if (this.options.no_new_keyring) args.push('--no-new-keyring');
      args.push(this.id);
      await this.runc.run(args, { stdio: init.io.runcStdio });
      init.io.afterStart();
      init.pid = Number(readFileSync(join(this.bundle, 'init.pid'), 'utf8'));
      init.startTime = startTimeOf(init.pid);
      if (consoleSock !== null) init.io.attachConsole(receiveMaster(consoleSock));
    } catch (e) {
      init.io?.kill();
      await this.runc.run(['delete', '--force', this.id]).catch(() => {});
      if (this.mounted) await unmountAll(rootfs).catch(() => {});
      this.mounted = false;
      throw e;
    } finally {
      if (consoleSock !== null) closeFd(consoleSock);
      if (consolePath) rmSync(consolePath, { force: true });
    }
    this.init = init;
    this.execs.clear();
    // the cgroup and its OOM watch after the answer, off the path of the run: the init cannot
    // run (nor be OOM-killed) before Start, and an exit handled first finds no cgroup to check
    setImmediate(() => this.watchCgroup(init));
    this.host.bind(init.pid, this, init);
    this.persist();
    // killed between runc create's fork and its return: the exit was reaped before the pid was known
    const early = this.host.claim(init.pid);
    this.publish('/tasks/create', {
      container_id: this.id,
      bundle: this.bundle,
      rootfs: req.rootfs ?? [],
      io: { stdin: stdio.stdin, stdout: stdio.stdout, stderr: stdio.stderr, terminal: stdio.terminal },
      checkpoint: req.checkpoint ?? '',
      pid: init.pid,
    });
    if (early) this.onExit(init, early.status, early.at);
    return { pid: init.pid };
  }

  private checkIdForCreate(id: string): void {
    if (id !== this.id) throw invalidArgument(`this shim serves container ${this.id}, not ${id}`);
  }

  private consoleSocket(): { fd: number; path: string } {
    const dir = join(this.host.stateDir, 'pty');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, `${randomBytes(8).toString('hex')}.sock`);
    return { fd: unixListen(path, 1), path };
  }

  async Start(req: any): Promise<any> {
    const p = this.process(req.id, req.exec_id);
    if (p.status !== 'created') throw failedPrecondition(`process ${p.id} is ${p.status}, not created`);
    p.starting = true;
    try {
      if (p.isInit) {
        await this.runc.run(['start', this.id]);
        p.status = 'running';
        this.persist();
        this.publish('/tasks/start', { container_id: this.id, pid: p.pid });
      } else {
        await this.startExec(p);
        p.status = 'running';
        this.persist();
        this.publish('/tasks/exec-started', { container_id: this.id, exec_id: p.execId, pid: p.pid });
      }
    } finally {
      p.starting = false;
    }
    const early = p.deferredExit ?? (p.isInit ? undefined : this.host.claim(p.pid));
    p.deferredExit = null;
    // an exit seen while starting is handled right after this answer leaves: its cgroup reads and
    // state writes are not on the path of the Start the caller waits for (its events keep their
    // order: /tasks/start is queued already)
    if (early) setImmediate(() => this.onExit(p, early.status, early.at));
    return { pid: p.pid };
  }

  private async startExec(p: Proc): Promise<void> {
    const init = this.init!;
    if (init.status !== 'running' && init.status !== 'paused') throw failedPrecondition(`container ${this.id} must be running to exec, it is ${init.status}`);
    const tmp = join(this.host.stateDir, 'tmp');
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    const name = randomBytes(8).toString('hex');
    const specFile = join(tmp, `${name}.json`);
    const pidFile = join(tmp, `${name}.pid`);
    writeFileSync(specFile, JSON.stringify(p.spec));
    let consoleSock: number | null = null;
    let consolePath = '';
    try {
      p.io = await ProcessIO.open(p.stdio, { id: this.id, namespace: this.namespace, tmp, reaper: this.host.reaper });
      const args = ['exec', '--detach', '--pid-file', pidFile, '--process', specFile];
      if (p.stdio.terminal) {
        ({ fd: consoleSock, path: consolePath } = this.consoleSocket());
        args.push('--console-socket', consolePath);
      }
      args.push(this.id);
      await this.runc.run(args, { stdio: p.io.runcStdio });
      p.io.afterStart();
      p.pid = Number(readFileSync(pidFile, 'utf8'));
      p.startTime = startTimeOf(p.pid);
      if (consoleSock !== null) p.io.attachConsole(receiveMaster(consoleSock));
      this.host.bind(p.pid, this, p);
    } catch (e) {
      p.io?.kill();
      p.io = null;
      throw e;
    } finally {
      if (consoleSock !== null) closeFd(consoleSock);
      for (const f of [specFile, pidFile, consolePath]) if (f) rmSync(f, { force: true });
    }
  }

  async Delete(req: any): Promise<any> {
    const p = this.process(req.id, req.exec_id);
    if (p.status === 'running' || p.status === 'paused') throw failedPrecondition(`cannot delete a running process ${p.id}`);
    if (!p.isInit) {
      this.execs.delete(p.execId);
      await p.io?.drain();
      p.io?.close();
      this.persist();
      return { pid: p.pid, exit_status: p.exitStatus, exited_at: p.exitedAt ?? null };
    }
    const rootfs = join(this.bundle, 'rootfs');
    const deleted = this.runc.run(['delete', ...(p.status === 'created' ? ['--force'] : []), this.id]).catch((e: BerthError) => {
      if (e.code !== Code.NotFound) throw e;
    });
    // a stopped container's rootfs is no longer used by it: unmounted here while runc deletes
    // the container (one step less on the path of a run), unless a poststop hook may want it
    const unmounting = this.mounted && p.status === 'stopped' && !this.poststop ? unmountOffLoop(rootfs, this.host.reaper) : undefined;
    unmounting?.catch(() => undefined);
    await deleted;
    await p.io?.drain();
    p.io?.close();
    for (const e of this.execs.values()) e.io?.close();
    this.oom?.stop();
    this.oom = null;
    for (const w of this.watches.values()) w.stop();
    this.watches.clear();
    await unmounting;
    // unmounted beside runc delete already (it throws when anything is left mounted)
    if (this.mounted && !unmounting) await unmountOffLoop(rootfs, this.host.reaper);
    this.mounted = false;
    if (p.status === 'created') p.setExited(0, nowTimestamp());
    this.host.unbind(p.pid);
    p.status = 'deleted';
    this.persist();
    this.publish('/tasks/delete', { container_id: this.id, pid: p.pid, exit_status: p.exitStatus, exited_at: p.exitedAt ?? null });
    return { pid: p.pid, exit_status: p.exitStatus, exited_at: p.exitedAt ?? null };
  }

  async Exec(req: any): Promise<void> {
    const init = this.process(req.id, '');
    if (!req.exec_id) throw invalidArgument('exec id must not be empty');
    if (this.execs.has(req.exec_id)) throw alreadyExists(`id ${req.exec_id}`);
    if (init.status === 'stopped') throw failedPrecondition(`container ${this.id} is stopped`);
    const p = new Proc(req.exec_id, req.exec_id, { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal });
    p.spec = req.spec?.value ? JSON.parse(Buffer.from(req.spec.value).toString('utf8')) : {};
    this.execs.set(req.exec_id, p);
    this.persist();
    this.publish('/tasks/exec-added', { container_id: this.id, exec_id: req.exec_id });
  }

  async Kill(req: any): Promise<void> {
    const p = this.process(req.id, req.exec_id);
    if (p.status === 'stopped' || p.status === 'deleted') throw notFound('process already finished');
    p.lastSignal = req.signal;
    if (p.isInit) {
      await this.runc.run(['kill', ...(req.all ? ['--all'] : []), this.id, String(req.signal)]);
      return;
    }
    if (p.status === 'created') throw failedPrecondition(`process ${p.id} has not been started`);
    try {
      process.kill(p.pid, req.signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') throw notFound('process already finished');
      throw e;
    }
  }

  async State(req: any): Promise<any> {
    const p = this.process(req.id, req.exec_id);
    return {
      id: p.id,
      bundle: this.bundle,
      pid: p.pid,
      status: p.status.toUpperCase(),
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exit_status: p.exitStatus,
      exited_at: p.exitedAt ?? null,
      exec_id: p.execId,
    };
  }

  async Pids(req: any): Promise<any> {
    this.process(req.id, '');
    const out = await this.runc.run(['ps', '--format', 'json', this.id], { output: true });
    const pids: number[] = JSON.parse(out || '[]') ?? [];
    const execOf = new Map<number, string>();
    for (const e of this.execs.values()) if (e.pid) execOf.set(e.pid, e.execId);
    return {
      processes: pids.map((pid) => {
        const exec = execOf.get(pid);
        return { pid, info: exec ? toAny('containerd.runc.v1.ProcessDetails', { exec_id: exec }) : null };
      }),
    };
  }

  async Pause(req: any): Promise<void> {
    const p = this.process(req.id, '');
    if (p.status !== 'running') throw failedPrecondition(`container ${this.id} is ${p.status}, not running`);
    await this.runc.run(['pause', this.id]);
    p.status = 'paused';
    this.persist();
    this.publish('/tasks/paused', { container_id: this.id });
  }

  async Resume(req: any): Promise<void> {
    const p = this.process(req.id, '');
    if (p.status !== 'paused') throw failedPrecondition(`container ${this.id} is ${p.status}, not paused`);
    await this.runc.run(['resume', this.id]);
    p.status = 'running';
    this.persist();
    this.publish('/tasks/resumed', { container_id: this.id });
  }

  async Checkpoint(_req: any): Promise<void> {
    throw unimplemented('checkpoint');
  }

  async ResizePty(req: any): Promise<void> {
    const p = this.process(req.id, req.exec_id);
    // as containerd's shim: a process without a terminal ignores it
    p.io?.pty?.resize(req.height, req.width);
  }

  async CloseIO(req: any): Promise<void> {
    const p = this.process(req.id, req.exec_id);
    if (req.stdin) p.io?.closeStdin();
  }

  async Update(req: any): Promise<void> {
    this.process(req.id, '');
    if (!req.resources?.value) throw invalidArgument('resources must be set');
    await this.runc.run(['update', '--resources', '-', this.id], { input: Buffer.from(req.resources.value).toString('utf8') });
  }

  async Wait(req: any): Promise<any> {
    const p = this.process(req.id, req.exec_id);
    await p.exited;
    return { exit_status: p.exitStatus, exited_at: p.exitedAt ?? null };
  }

  async Stats(req: any): Promise<any> {
    this.process(req.id, '');
    if (!this.cgroup.v1 && !this.cgroup.v2) throw notFound('cgroup does not exist');
    return { stats: metrics(this.cgroup) };
  }

  async Connect(_req: any): Promise<any> {
    return { shim_pid: process.pid, task_pid: this.init && this.init.status !== 'deleted' ? this.init.pid : 0, version: '' };
  }

  /**
   * A stock shim exits once it serves no container; here the container's socket and record go,
   * and the host stays for the others. A container still running keeps being served.
   */
  async Shutdown(req: any): Promise<void> {
    const live = this.init && this.init.status !== 'deleted';
    if (live && !req.now) return;
    setImmediate(() => void this.host.release(this));
  }

  /** Stops serving (the host's release): the socket goes, the events still pending do not. */
  async close(): Promise<void> {
    this.record.close();
    this.oom?.stop();
    for (const w of this.watches.values()) w.stop();
    this.watches.clear();
    await this.server.close({ timeoutMs: 1000 });
  }

  /** Live processes, for the host's Info. */
  get running(): boolean {
    return !!this.init && (this.init.status === 'running' || this.init.status === 'paused' || this.init.status === 'created');
  }
}

/**
 * Unmounts `target` with umount(8) in a child process first: an overlay's unmount syncs its
 * upper filesystem, which takes tens of ms while other writes are under way, and in this
 * process it would stall every container the host serves. What is left (a stack of mounts, a
 * busy one, no umount binary) goes through the native loop.
 */
async function unmountOffLoop(target: string, reaper: Reaper): Promise<void> {
  try {
    await reaper.spawn('umount', [target]);
  } catch {
    // no umount(8): the native loop below does it all
  }
  await unmountAll(target);
}

function decodeOptions(any: Any | { type_url: string; value: string | Uint8Array } | undefined): RuncOptions {
  if (!any?.type_url) return {};
  const value = typeof any.value === 'string' ? Buffer.from(any.value, 'base64') : any.value;
  try {
    return fromAny({ type_url: any.type_url, value }) as RuncOptions;
  } catch (e) {
    throw invalidArgument(`runtime options ${any.type_url}: ${(e as Error).message}`);
  }
}

/** The pty master runc sent to the console socket (it has exited, so it is waiting there). */
function receiveMaster(listenFd: number): number {
  const conn = accept(listenFd);
  if (conn === null) throw new BerthError(Code.Unknown, 'runc did not connect to the console socket');
  try {
    const got = recvmsg(conn, 4096, 1);
    if (!got || got.fds.length !== 1) throw new BerthError(Code.Unknown, 'no pty master received from runc');
    return got.fds[0]!;
  } finally {
    closeFd(conn);
  }
}

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}
