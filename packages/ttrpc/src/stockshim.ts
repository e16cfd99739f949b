// Starting Debian's stock containerd-shim-runc-v2 the way containerd 1.6 does (runtime/v2
// binary.go, shim/util.go), for the interop test and the benchmark. Not part of the package's API.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, existsSync, openSync, readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

export const SHIM = '/usr/bin/containerd-shim-runc-v2';
export const shimAvailable = existsSync(SHIM) && process.getuid?.() === 0;

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** containerd's shim socket scheme (SocketAddress): sha256 of address/namespace/id under /run/containerd/s. */
export function shimSocket(address: string, ns: string, id: string): string {
  return `/run/containerd/s/${createHash('sha256').update(join(address, ns, id)).digest('hex')}`;
}

/**
 * containerd makes the bundle's `log` fifo and holds it open for reading before it starts a
 * shim; the shim refuses to run without it.
 */
export function openShimLog(bundle: string, onData: (text: string) => void): net.Socket {
  execFileSync('mkfifo', [join(bundle, 'log')]);
  const sock = new net.Socket({ fd: openSync(join(bundle, 'log'), constants.O_RDWR | constants.O_NONBLOCK), readable: true, writable: false });
  sock.on('data', (c) => onData(c.toString()));
  sock.on('error', () => {});
  return sock;
}

export interface StartOptions {
  bundle: string;
  namespace: string;
  id: string;
  /** containerd's gRPC address: only named (it picks the socket name); TTRPC_ADDRESS is this + .ttrpc */
  address: string;
  publishBinary: string;
}

/**
 * `start` run in the bundle with stdin closed (the shim reads runtime options from it to EOF);
 * resolves with the address it prints once its daemon listens.
 */
export function startShim(o: StartOptions): Promise<string> {
  const args = ['-namespace', o.namespace, '-address', o.address, '-publish-binary', o.publishBinary, '-id', o.id, 'start'];
  const env = { ...process.env, TTRPC_ADDRESS: `${o.address}.ttrpc`, GOMAXPROCS: '2' };
  return new Promise((resolve, reject) => {
    const child = spawn(SHIM, args, { cwd: o.bundle, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out.trim());
      else reject(new Error(`shim start exited ${code}: ${out}${err}`));
    });
  });
}

/** Kills the daemon of this bundle's shim: by its pid file, or failing that by its unique -namespace/-id. */
export function killShim(o: Pick<StartOptions, 'bundle' | 'namespace' | 'id'>): void {
  const pids = new Set<number>();
  try {
    pids.add(Number(readFileSync(join(o.bundle, 'shim.pid'), 'utf8')));
  } catch {}
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv[0] === SHIM && argv[argv.indexOf('-namespace') + 1] === o.namespace && argv[argv.indexOf('-id') + 1] === o.id) pids.add(Number(d));
    } catch {}
  }
  for (const p of pids) if (p > 0 && alive(p)) process.kill(p, 'SIGKILL');
}
