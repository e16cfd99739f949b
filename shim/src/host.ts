// The resident shim host: one warm Node process serving many containers, each on its own
// ttrpc socket at containerd's address scheme, so nothing is exec'd on the path of a run. It is
// a child subreaper: each container's init and exec'd processes become its children when runc
// exits, and the Reaper hands their exits to the containers. Its state folder holds what a
// restarted host needs to find its containers again (see README, "When the host crashes").
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nowTimestamp, service, type Timestamp } from '@berth/api';
import { alreadyExists, invalidArgument } from '@berth/errdefs';
import { Reaper, setChildSubreaper, type ExitInfo } from '@berth/native';
import { TtrpcServer, serveService } from '@berth/ttrpc';
import { Container, type HostContext, type Registration } from './container.js';
import { Forwarder, type ForwarderOptions } from './events.js';
import { exitCode, type Proc } from './process.js';

export const VERSION = '0.1.0';

export interface HostOptions {
  state: string;
  /** the Berth (containerd) socket this host's stack serves: names the stack in `ps` */
  address: string;
  /** the default events endpoint (each Start names its own) */
  ttrpcAddress: string;
  node?: string;
  events?: ForwarderOptions;
  log?: (msg: string) => void;
}

/** containerd's shim socket name: sha256 of address/namespace/id (runtime/v2/shim SocketAddress). */
export function socketKey(address: string, namespace: string, id: string): string {
  return createHash('sha256').update(join(address, namespace, id)).digest('hex');
}

export class Host implements HostContext {
  readonly stateDir: string;
  readonly reaper: Reaper;
  readonly forwarder: Forwarder;
  readonly control = new TtrpcServer();
  readonly containers = new Map<string, Container>();
  private readonly pids = new Map<number, { c: Container; p: Proc }>();
  private readonly unclaimed = new Map<number, { status: number; at: Timestamp; seen: number }>();
  private readonly startedNs = BigInt(Date.now()) * 1_000_000n;
  private shuttingDown = false;
  private exited: () => void = () => {};
  /** resolves when the host has stopped (Shutdown) */
  readonly stopped = new Promise<void>((r) => (this.exited = r));
  readonly log: (msg: string) => void;

  constructor(readonly o: HostOptions) {
    this.stateDir = o.state;
    this.log = o.log ?? ((m) => process.stderr.write(`${new Date().toISOString()} shim-host: ${m}\n`));
    this.reaper = new Reaper((e) => this.onExit(e));
    this.forwarder = new Forwarder(join(o.state, 'events'), { log: this.log, ...o.events });
  }

  private get registry(): string {
    return join(this.stateDir, 'containers');
  }

  async start(): Promise<this> {
    mkdirSync(this.registry, { recursive: true, mode: 0o700 });
    mkdirSync(join(this.stateDir, 's'), { recursive: true, mode: 0o700 });
    setChildSubreaper(true);
    this.reaper.start();
    // an earlier host's undelivered events go first, before any this host adds
    this.forwarder.resumeAll();
    for (const name of readdirSync(this.registry).filter((n) => n.endsWith('.json'))) {
      let reg: Registration;
      try {
        reg = JSON.parse(readFileSync(join(this.registry, name), 'utf8'));
      } catch {
        continue;
      }
      const c = new Container(reg, this);
      try {
        c.restore();
        await c.serve();
        this.containers.set(c.key, c);
        this.log(`re-adopted ${reg.namespace}/${reg.id} (${c.init ? c.init.status : 'not created'})`);
      } catch (e) {
        this.log(`could not re-adopt ${reg.namespace}/${reg.id}: ${(e as Error).message}`);
      }
    }
    serveService(this.control, service('berth.shim.v1.Host'), {
      Start: (req) => this.startContainer(req),
      Info: () => this.info(),
      Shutdown: (req) => this.shutdown(!!req.now),
    });
    await this.control.listen(join(this.stateDir, 'host.sock'));
    return this;
  }

  /** Host.Start: serve one more container (what `start` does for a stock shim). */
  async startContainer(req: any): Promise<{ address: string; pid: number }> {
    if (!req.id || !req.namespace || !req.bundle) throw invalidArgument('id, namespace and bundle are required');
    const key = socketKey(req.address || this.o.address, req.namespace, req.id);
    const socket = join(this.stateDir, 's', key);
    const address = `unix://${socket}`;
    const existing = this.containers.get(key);
    if (existing) {
      // a caller retrying after a lost answer gets the same container back
      if (existing.bundle === req.bundle) return { address, pid: process.pid };
      throw alreadyExists(`container ${req.namespace}/${req.id}`);
    }
    const reg: Registration = {
      id: req.id,
      namespace: req.namespace,
      bundle: req.bundle,
      address: req.address || this.o.address,
      ttrpcAddress: req.ttrpc_address || this.o.ttrpcAddress,
      socket,
      options: req.options?.type_url ? { type_url: req.options.type_url, value: Buffer.from(req.options.value).toString('base64') } : null,
    };
    const c = new Container(reg, this);
    this.containers.set(key, c);
    try {
      const file = join(this.registry, `${key}.json`);
      writeFileSync(`${file}.tmp`, JSON.stringify(reg));
      renameSync(`${file}.tmp`, file);
      await c.serve();
      writeFileSync(join(req.bundle, 'address'), address);
    } catch (e) {
      this.containers.delete(key);
      rmSync(join(this.registry, `${key}.json`), { force: true });
      await c.close().catch(() => {});
      throw e;
    }
    return { address, pid: process.pid };
  }

  info(): Record<string, unknown> {
    return {
      pid: process.pid,
      version: VERSION,
      containers: [...this.containers.values()].map((c) => `${c.namespace}/${c.id}`),
      started_ns: Number(this.startedNs),
    };
  }

  async shutdown(now: boolean): Promise<void> {
    this.shuttingDown = true;
    if (now || this.containers.size === 0) setImmediate(() => void this.stop());
  }

  async release(c: Container): Promise<void> {
    if (this.containers.get(c.key) !== c) return;
    this.containers.delete(c.key);
    for (const [pid, e] of this.pids) if (e.c === c) this.pids.delete(pid);
    rmSync(join(this.registry, `${c.key}.json`), { force: true });
    this.forwarder.retire(c.key);
    await c.close();
    if (this.shuttingDown && this.containers.size === 0) await this.stop();
  }

  /** Stops serving; containers keep running (a new host re-adopts them). */
  async stop(): Promise<void> {
    // what is not delivered yet stays in the spool for the next host; give it a moment first
    for (let i = 0; i < 20 && this.forwarder.pending() > 0; i++) await new Promise((r) => setTimeout(r, 100));
    for (const c of this.containers.values()) await c.close().catch(() => {});
    await this.control.close({ timeoutMs: 1000 });
    this.forwarder.close();
    this.reaper.stop();
    this.exited();
  }

  bind(pid: number, c: Container, p: Proc): void {
    this.pids.set(pid, { c, p });
  }

  unbind(pid: number): void {
    this.pids.delete(pid);
  }

  claim(pid: number): { status: number; at: Timestamp } | undefined {
    const e = this.unclaimed.get(pid);
    this.unclaimed.delete(pid);
    return e;
  }

  private onExit(e: ExitInfo): void {
    const status = exitCode(e);
    const at = nowTimestamp();
    const owner = this.pids.get(e.pid);
    if (owner) return owner.c.onExit(owner.p, status, at);
    // an exec may end before runc exec has returned its pid: keep the exit a while for it
    const now = Date.now();
    this.unclaimed.set(e.pid, { status, at, seen: now });
    for (const [pid, u] of this.unclaimed) if (now - u.seen > 60_000) this.unclaimed.delete(pid);
  }
}
