// For the shim's tests and bench (not part of the package's API): a busybox bundle, FIFOs read
// the way ctr reads them, a host process started as the tasks service starts it, and an events
// endpoint that records what the host forwards and can be taken down.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, constants as C, existsSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromAny, service } from '@berth/api';
import { mknod, S_IF } from '@berth/native';
import { TtrpcClient, TtrpcServer, serveService, serviceClient, type ServerContext, type TypedClient } from '@berth/ttrpc';

export const MAIN = join(dirname(fileURLToPath(import.meta.url)), 'main.js');
export const available = process.getuid?.() === 0 && existsSync('/bin/busybox') && (existsSync('/usr/sbin/runc') || existsSync('/usr/bin/runc'));
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A read-only root with busybox and its applets, shared by every test container (bind-mounted by Create). */
export function busyboxRoot(dir: string): string {
  const root = join(dir, 'busybox-root');
  if (existsSync(join(root, 'bin', 'busybox'))) return root;
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  for (const tool of ['sh', 'sleep', 'echo', 'cat', 'stty', 'true', 'false', 'head', 'tr', 'dd', 'ls']) symlinkSync('busybox', join(root, 'bin', tool));
  return root;
}

let template: any;
function specTemplate(dir: string): any {
  if (!template) {
    const t = join(dir, 'spec-template');
    mkdirSync(t, { recursive: true });
    execFileSync('runc', ['spec'], { cwd: t });
    template = JSON.parse(readFileSync(join(t, 'config.json'), 'utf8'));
  }
  return structuredClone(template);
}

export interface BundleOptions {
  args: string[];
  terminal?: boolean;
  memoryLimit?: number;
}

/** A bundle folder with config.json, as the tasks service writes it; the rootfs comes from Create's mounts. */
export function makeBundle(dir: string, id: string, o: BundleOptions): string {
  const bundle = join(dir, 'bundles', id);
  mkdirSync(bundle, { recursive: true });
  const spec = specTemplate(dir);
  spec.process.args = o.args;
  spec.process.terminal = !!o.terminal;
  spec.process.env = ['PATH=/bin', 'TERM=xterm'];
  spec.root = { path: 'rootfs', readonly: true };
  spec.linux.cgroupsPath = `/berth-shim-test/${id}`;
  if (o.memoryLimit) spec.linux.resources = { ...spec.linux.resources, memory: { limit: o.memoryLimit, swap: o.memoryLimit } };
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  return bundle;
}

export function rootMount(dir: string) {
  return [{ type: 'bind', source: busyboxRoot(dir), target: '', options: ['rbind', 'ro'] }];
}

export function mkfifo(path: string): string {
  mkdirSync(dirname(path), { recursive: true });
  mknod(path, S_IF.FIFO | 0o600, 0);
  return path;
}

/**
 * ctr opens its FIFO ends before the shim opens its own and waits for them; a non-blocking
 * reader opened before any writer would see EOF at once. So hold the FIFO open (O_RDWR) until
 * the shim has its end, then read to EOF: `const r = holdFifo(p); ...Start...; await r.read()`.
 */
export function holdFifo(path: string): { read(): Promise<string> } {
  const keeper = openSync(path, C.O_RDWR | C.O_NONBLOCK);
  return {
    read() {
      const text = readFifo(path);
      closeSync(keeper);
      return text;
    },
  };
}

/** Reads a FIFO to EOF as ctr does (after the shim has opened its end). */
export function readFifo(path: string): Promise<string> {
  const sock = new net.Socket({ fd: openSync(path, C.O_RDONLY | C.O_NONBLOCK), readable: true, writable: false });
  let text = '';
  sock.setEncoding('utf8');
  sock.on('data', (c: string) => (text += c));
  return new Promise((resolve, reject) => {
    sock.on('end', () => resolve(text));
    sock.on('error', reject);
  });
}

export interface Forwarded {
  topic: string;
  namespace: string;
  metadata: string[] | undefined;
  event: any;
}

/** The tasks service's events endpoint: records every Forward; down() makes it refuse them. */
export class EventsEndpoint {
  readonly got: Forwarded[] = [];
  private server: TtrpcServer | null = null;

  constructor(readonly path: string) {}

  async up(): Promise<void> {
    const s = new TtrpcServer();
    serveService(s, service('containerd.services.events.ttrpc.v1.Events'), {
      Forward: (req: any, ctx: ServerContext) => {
        const e = req.envelope;
        this.got.push({ topic: e.topic, namespace: e.namespace, metadata: ctx.metadata['containerd-namespace-ttrpc'], event: fromAny(e.event) });
      },
    });
    await s.listen(this.path);
    this.server = s;
  }

  async down(): Promise<void> {
    await this.server?.close({ timeoutMs: 200 });
    this.server = null;
  }

  of(containerId: string): Forwarded[] {
    return this.got.filter((f) => f.event.container_id === containerId);
  }

  async waitFor(pred: (got: Forwarded[]) => boolean, ms = 10_000): Promise<void> {
    for (let t = 0; t < ms; t += 20) {
      if (pred(this.got)) return;
      await sleep(20);
    }
    throw new Error(`events: condition not met; got ${this.got.map((f) => `${f.topic}(${f.event.container_id})`).join(' ')}`);
  }
}

/** The host process as the tasks service starts it (own session, not our child's life). */
export async function startHost(state: string, address: string, ttrpcAddress: string): Promise<{ proc: ChildProcess; client: TtrpcClient; host: TypedClient }> {
  mkdirSync(state, { recursive: true });
  const log = openSync(join(state, 'host.log'), 'a');
  const proc = spawn(process.execPath, [MAIN, 'host', '--state', state, '--address', address, '--ttrpc-address', ttrpcAddress], { detached: true, stdio: ['ignore', log, log] });
  proc.unref();
  const sock = join(state, 'host.sock');
  for (let i = 0; i < 400; i++) {
    await sleep(25);
    if (proc.exitCode !== null) break;
    try {
      const client = await TtrpcClient.connect(sock, { timeoutMs: 5000 });
      const host = serviceClient(client, service('berth.shim.v1.Host'));
      const info = await host.Info!({});
      if (info.pid !== proc.pid) {
        client.close();
        continue; // an earlier host's socket
      }
      return { proc, client, host };
    } catch {}
  }
  throw new Error(`host did not start: ${readFileSync(join(state, 'host.log'), 'utf8')}`);
}

export function taskClient(address: string): Promise<TtrpcClient> {
  return TtrpcClient.connect(address.replace(/^unix:\/\//, ''), { timeoutMs: 10_000 });
}

export function task(client: TtrpcClient): TypedClient {
  return serviceClient(client, service('containerd.task.v2.Task'));
}

/** PSS of a process in KiB (smaps_rollup). */
export function pssKiB(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}
