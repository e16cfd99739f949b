// Berth's resident shim host, kept warm: started when the tasks service starts (and again when it
// dies), detached in a session of its own so that it outlives the tasks service and `berth up`,
// and found again on its control socket `<dir>/host.sock` (berth.shim.v1.Host).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { service, type Any } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import { TtrpcClient, serviceClient, type TypedClient } from '@berth/ttrpc';

export const hostEntry = fileURLToPath(new URL('../../../shim/dist/main.js', import.meta.url));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface HostOptions {
  dir: string;
  address: string;
  ttrpcAddress: string;
  node: string;
  log: (m: string) => void;
}

export class ShimHost {
  private client?: TtrpcClient;
  private api?: TypedClient;
  private connecting?: Promise<TypedClient>;
  private stopped = false;
  pid = 0;

  constructor(private readonly o: HostOptions) {}

  static available(): boolean {
    return existsSync(hostEntry);
  }

  get socket(): string {
    return join(this.o.dir, 'host.sock');
  }

  /** Connects to the running host, or starts one; kept connected (and restarted) from then on. */
  ensure(): Promise<TypedClient> {
    if (this.api) return Promise.resolve(this.api);
    this.connecting ??= this.connect().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async connect(): Promise<TypedClient> {
    let client = await TtrpcClient.connect(this.socket, { timeoutMs: 1000 }).catch(() => undefined);
    if (!client) {
      // a host of this state that is alive but slow to answer (a loaded machine) is waited
      // for, never doubled: a second one would take over the socket and orphan the first
      if (!this.running()) this.spawn();
      for (let i = 0; i < 200 && !client; i++) {
        await sleep(25);
        client = await TtrpcClient.connect(this.socket, { timeoutMs: 1000 }).catch(() => undefined);
      }
      if (!client) throw new BerthError(Code.Unavailable, `shim host did not come up on ${this.socket}`);
    }
    const api = serviceClient(client, service('berth.shim.v1.Host'));
    const info = await api.Info!({}, { timeoutMs: 5000 });
    this.pid = info.pid;
    this.client = client;
    this.api = api;
    void client.closed.then(() => {
      this.client = this.api = undefined;
      if (this.stopped) return;
      this.o.log(`shim host ${this.pid} went away; starting it again`);
      // a host that dies at once must not become a busy loop
      setTimeout(() => void this.ensure().catch((e) => this.o.log(`shim host: ${(e as Error).message}`)), 200).unref();
    });
    return api;
  }

  /** Whether a host of this state folder is alive, by its command line (not by a pid file). */
  private running(): boolean {
    const want = ['host', '--state', this.o.dir];
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
        const i = argv.indexOf(hostEntry);
        if (i >= 0 && want.every((w, j) => argv[i + 1 + j] === w)) return true;
      } catch {
        // gone meanwhile
      }
    }
    return false;
  }

  private spawn(): void {
    mkdirSync(this.o.dir, { recursive: true, mode: 0o711 });
    const out = openSync(join(this.o.dir, 'host.log'), 'a');
    // BERTH_NODE_ARGS (profiling flags, as the supervisor gives every service) reach the host too
    const node = (process.env.BERTH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const args = [...node, hostEntry, 'host', '--state', this.o.dir, '--address', this.o.address, '--ttrpc-address', this.o.ttrpcAddress, '--node', this.o.node];
    // detached: a session of its own (setsid), no parent-death signal, no pipes to us
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out] });
    child.unref();
    closeSync(out);
    this.o.log(`started shim host ${child.pid}`);
  }

  async start(req: { id: string; namespace: string; bundle: string; options: Any | null }): Promise<string> {
    const api = await this.ensure();
    const res = await api.Start!({ ...req, address: this.o.address, ttrpc_address: this.o.ttrpcAddress }, { timeoutMs: 30_000 });
    return res.address;
  }

  /** What the host serves now ("<namespace>/<id>"), or undefined when it cannot be asked. */
  async containers(): Promise<Set<string> | undefined> {
    try {
      const api = await this.ensure();
      return new Set<string>((await api.Info!({}, { timeoutMs: 5000 })).containers);
    } catch {
      return undefined;
    }
  }

  /** The tasks service stops: the host stays (it serves running containers). */
  close(): void {
    this.stopped = true;
    this.client?.close();
  }
}
