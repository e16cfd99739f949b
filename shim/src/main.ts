#!/usr/bin/env node
// The shim's command line.
//   host --state DIR --address SOCK --ttrpc-address SOCK [--node ID]
//       the resident host (the tasks service starts it detached; it outlives `berth up`)
//   [-namespace NS -address SOCK -publish-binary BIN -id ID -bundle DIR -debug] start|delete
//       containerd's shim binary protocol, so a stock containerd can run this as
//       containerd-shim-berth-v2: `start` makes sure a host serves this containerd (starting one
//       if none answers), asks it to serve the container and prints the address; `delete`
//       cleans up a container whose shim is gone and prints a DeleteResponse.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { codec, nowTimestamp, readyCodecsInBackground, service } from '@berth/api';
import { TtrpcClient, serviceClient } from '@berth/ttrpc';

type Flags = Record<string, string | boolean>;

function parse(argv: string[]): { cmd: string; flags: Flags } {
  const flags: Flags = {};
  let cmd = '';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('-')) {
      const name = a.replace(/^--?/, '');
      const eq = name.indexOf('=');
      if (eq >= 0) flags[name.slice(0, eq)] = name.slice(eq + 1);
      else if (name === 'debug' || name === 'v') flags[name] = true;
      else flags[name] = argv[++i] ?? '';
    } else if (!cmd) cmd = a;
  }
  return { cmd, flags };
}

const str = (f: Flags, k: string, d = '') => (typeof f[k] === 'string' ? (f[k] as string) : d);

async function main(): Promise<number> {
  const { cmd, flags } = parse(process.argv.slice(2));
  switch (cmd) {
    case 'host':
      // the resident host lives long: its codecs are readied before its first container's calls
      readyCodecsInBackground();
      return runHost(flags);
    case 'start':
      return binaryStart(flags);
    case 'delete':
      return binaryDelete(flags);
    default:
      process.stderr.write('usage: main.js host --state DIR --address SOCK --ttrpc-address SOCK [--node ID]\n       main.js -namespace NS -address SOCK -id ID [-bundle DIR] start|delete\n');
      return 2;
  }
}

async function runHost(flags: Flags): Promise<number> {
  const { Host } = await import('./host.js');
  const state = str(flags, 'state');
  if (!state) throw new Error('host: --state is required');
  const host = new Host({ state, address: str(flags, 'address'), ttrpcAddress: str(flags, 'ttrpc-address'), node: str(flags, 'node') });
  // a bug met in one container's callback must not take the others down with the host
  process.on('uncaughtException', (e) => host.log(`uncaught: ${e.stack ?? e}`));
  process.on('SIGPIPE', () => {});
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      host.log(`${sig}: stopping (containers keep running)`);
      void host.stop();
    });
  }
  process.on('exit', (code) => host.log(`exit ${code}`));
  await host.start();
  host.log(`serving ${join(state, 'host.sock')} for ${str(flags, 'address')} (pid ${process.pid})`);
  await host.stopped;
  return 0;
}

/** Where `start` finds (or starts) the host of a containerd: one per daemon address. */
function defaultState(address: string): string {
  return process.env.BERTH_SHIM_STATE ?? join('/run/berth-shim', createHash('sha256').update(address).digest('hex').slice(0, 16));
}

async function connectHost(sock: string, flags: Flags, ttrpcAddress: string): Promise<TtrpcClient> {
  try {
    return await TtrpcClient.connect(sock, { timeoutMs: 2000 });
  } catch {}
  const state = join(sock, '..');
  mkdirSync(state, { recursive: true, mode: 0o700 });
  const log = openSync(join(state, 'host.log'), 'a');
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'host', '--state', state, '--address', str(flags, 'address'), '--ttrpc-address', ttrpcAddress], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.unref();
  closeSync(log);
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 25));
    if (!existsSync(sock)) continue;
    try {
      return await TtrpcClient.connect(sock, { timeoutMs: 2000 });
    } catch {}
  }
  throw new Error(`shim host did not start (see ${join(state, 'host.log')})`);
}

async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function binaryStart(flags: Flags): Promise<number> {
  const address = str(flags, 'address');
  const ttrpcAddress = process.env.TTRPC_ADDRESS ?? `${address}.ttrpc`;
  const bundle = str(flags, 'bundle', process.cwd());
  const raw = await readStdin();
  const options = raw.length ? codec('google.protobuf.Any').decode(raw) : null;
  const client = await connectHost(join(defaultState(address), 'host.sock'), flags, ttrpcAddress);
  try {
    const host = serviceClient(client, service('berth.shim.v1.Host'));
    const res = await host.Start!({ id: str(flags, 'id'), namespace: str(flags, 'namespace'), bundle, address, ttrpc_address: ttrpcAddress, options }, { timeoutMs: 10_000 });
    process.stdout.write(res.address);
    return 0;
  } finally {
    client.close();
  }
}

/**
 * containerd calls `delete` when a shim cannot be reached: the container is force-deleted and
 * reported as killed (137). If the host still serves it, the host does the work.
 */
async function binaryDelete(flags: Flags): Promise<number> {
  const id = str(flags, 'id');
  const namespace = str(flags, 'namespace');
  const bundle = str(flags, 'bundle', process.cwd());
  const response = codec('containerd.task.v2.DeleteResponse');
  let answer: Record<string, unknown> | null = null;
  try {
    const address = readFileSync(join(bundle, 'address'), 'utf8').trim().replace(/^unix:\/\//, '');
    const client = await TtrpcClient.connect(address, { timeoutMs: 2000 });
    try {
      const task = serviceClient(client, service('containerd.task.v2.Task'));
      const md = { timeoutMs: 10_000, metadata: { 'containerd-namespace-ttrpc': namespace } };
      const st = await task.State!({ id }, md).catch(() => null);
      if (st && (st.status === 'RUNNING' || st.status === 'PAUSED')) {
        await task.Kill!({ id, signal: 9, all: true }, md).catch(() => {});
        await task.Wait!({ id }, md).catch(() => {});
      }
      const d = await task.Delete!({ id }, md).catch(() => null);
      await task.Shutdown!({ id, now: true }, md).catch(() => {});
      if (d) answer = { pid: d.pid, exit_status: d.exit_status, exited_at: d.exited_at };
    } finally {
      client.close();
    }
  } catch {}
  if (!answer) {
    // no host: what containerd's own shim does, by hand
    let opts: { binary_name?: string; root?: string } = {};
    let root = join(defaultState(str(flags, 'address')), 'runc', namespace);
    try {
      const rec = JSON.parse(readFileSync(join(bundle, 'berth-shim.json'), 'utf8'));
      opts = rec.options ?? {};
      root = rec.runcRoot ?? root;
    } catch {}
    await new Promise<void>((resolve) => {
      const c = spawn(opts.binary_name || 'runc', ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
      c.on('close', () => resolve());
      c.on('error', () => resolve());
    });
    const { unmountAll } = await import('@berth/snapshot/mount');
    await unmountAll(join(bundle, 'rootfs')).catch(() => {});
    answer = { pid: 0, exit_status: 128 + 9, exited_at: nowTimestamp() };
  }
  process.stdout.write(response.encode(answer));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  },
);
