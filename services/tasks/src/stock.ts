// Stock shims (containerd-shim-runc-v2 and kin), started and cleaned up as containerd's
// runtime v2 does (binary.go): `start` in the bundle with TTRPC_ADDRESS in the environment and
// the runtime options on stdin, printing the address it serves; `delete` after a shim died.
import { spawn } from 'node:child_process';
import { constants, openSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { codec, type Any } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import { mkfifo } from './fifo.js';

export interface ShimEnv {
  /** the socket the shim names as containerd's (it picks its own socket path from it) */
  address: string;
  /** where shims forward their events */
  ttrpcAddress: string;
}

const anyCodec = codec('google.protobuf.Any');
const deleteResponse = codec('containerd.task.v2.DeleteResponse');

function args(env: ShimEnv, ns: string, id: string, more: string[]): string[] {
  // -publish-binary is only for shims without TTRPC_ADDRESS; runc's v2 shim always forwards over ttrpc
  return ['-namespace', ns, '-address', env.address, '-publish-binary', '/bin/false', '-id', id, ...more];
}

function runShim(binary: string, argv: string[], cwd: string, env: ShimEnv, stdin: Uint8Array): Promise<{ code: number | null; out: Buffer; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, argv, { cwd, env: { ...process.env, TTRPC_ADDRESS: env.ttrpcAddress }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c) => (err += c));
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out: Buffer.concat(out), err });
    });
  });
}

/**
 * The bundle's `log` fifo, held open for reading: the shim refuses to start without a reader,
 * and writes its log there. Opened without blocking (never tie up a pool thread on a fifo).
 */
export function openShimLog(bundle: string, create: boolean, onLine: (line: string) => void): net.Socket | undefined {
  const path = join(bundle, 'log');
  if (create) mkfifo(path);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  const sock = new net.Socket({ fd, readable: true, writable: false });
  let buf = '';
  sock.on('data', (c) => {
    buf += c.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    // the Go shim logs every plugin it loads at info level: only what may matter is kept
    for (const l of lines) if (l && !l.includes("level=info")) onLine(l);
  });
  sock.on('error', () => {});
  return sock;
}

export async function startStock(binary: string, env: ShimEnv, ns: string, id: string, bundle: string, options: Any | null): Promise<string> {
  const r = await runShim(binary, args(env, ns, id, ['start']), bundle, env, options ? anyCodec.encode(options) : new Uint8Array());
  if (r.code !== 0) throw new BerthError(Code.Unknown, `failed to start shim: start failed: ${(r.out.toString() + r.err).trim()}: exit status ${r.code}`);
  return r.out.toString().trim();
}

export interface Exit {
  pid: number;
  exit_status: number;
  exited_at: { seconds: number; nanos: number } | null;
}

/** `delete`: the shim binary cleans up after a dead shim (runc delete) and says how the task ended. */
export async function deleteStock(binary: string, env: ShimEnv, ns: string, id: string, bundle: string): Promise<Exit> {
  const r = await runShim(binary, args(env, ns, id, ['-bundle', bundle, 'delete']), bundle, env, new Uint8Array());
  if (r.code !== 0) throw new BerthError(Code.Unknown, `${r.err.trim()}: exit status ${r.code}`);
  return deleteResponse.decode(r.out) as Exit;
}
