// Shared by the benchmarks: start Berth's stack and the reference containerd, a raw gRPC client.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';

export const repo = resolve(fileURLToPath(import.meta.url), '..', '..');
const refScript = resolve(repo, '..', 'shared', 'testenv', 'reference-containerd.sh');

export async function startBerth() {
  const dir = mkdtempSync('/tmp/berth-bench-');
  // BERTH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") reaches every service process
  const proc = spawn(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'up', '--root', join(dir, 'root'), '--state', join(dir, 'state'), '--nats-port', '0', '--node', 'bench'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const sock = await new Promise((res, rej) => {
    proc.stdout.on('data', (b) => {
      out += b;
      const m = /berth: ready (\S+)/.exec(out);
      if (m) res(m[1]);
    });
    proc.once('exit', (c) => rej(new Error(`berth up exited ${c}: ${out}`)));
  });
  const natsUrl = /nats-server on (\S+)/.exec(out)[1];
  return {
    sock, natsUrl, dir,
    stop: async () => {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
      // the shim host outlives `berth up` by design; a bench's stack takes its own with it
      try { execFileSync('pkill', ['-KILL', '-f', `shim/dist/main.js host --state ${join(dir, 'state', 'shim')}`]); } catch { /* none left */ }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A NATS connection to a Berth stack as one of its users (`gateway`, `events`, `subscriber`...). */
export async function natsAs(berth, user) {
  const { connect, nkeyAuthenticator } = await import('@nats-io/transport-node');
  const c = JSON.parse(readFileSync(join(berth.dir, 'root', 'nats', 'creds', `${user}.json`), 'utf8'));
  return connect({ servers: berth.natsUrl, authenticator: nkeyAuthenticator(new TextEncoder().encode(c.nkey_seed)), inboxPrefix: c.inbox_prefix || `_INBOX.${c.user}` });
}

export function startReference() {
  if (!existsSync(refScript)) return undefined;
  const dir = mkdtempSync('/tmp/berth-bref-');
  const sock = execFileSync(refScript, ['start', dir], { encoding: 'utf8' }).trim().split('\n').at(-1);
  const pid = Number(readFileSync(join(dir, 'containerd.pid'), 'utf8'));
  return { sock, pid, stop: () => { execFileSync(refScript, ['stop', dir]); rmSync(dir, { recursive: true, force: true }); } };
}

export function client(sock) {
  return new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20 });
}

export function meta(ns) {
  const m = new grpc.Metadata();
  if (ns) m.set('containerd-namespace', ns);
  return m;
}

export const id = (b) => b;
export const toBuf = (u) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

export function unary(c, path, bytes, md) {
  return new Promise((res, rej) => c.makeUnaryRequest(path, toBuf, id, toBuf(bytes), md, (e, r) => (e ? rej(e) : res(r))));
}

export function pct(values, p) {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.floor(v.length * p))];
}

/** Peak RSS (VmHWM) in MiB of a process, 0 when it is gone. */
export function peakRssMb(pid) {
  try {
    return Math.round(Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024);
  } catch {
    return 0;
  }
}

/** Every process of a Berth stack by name: the services (pid files) and its nats-server. */
export function berthProcesses(stateDir) {
  const out = {};
  for (const f of readdirSync(join(stateDir, 'pids'))) out[f.replace(/\.pid$/, '')] = Number(readFileSync(join(stateDir, 'pids', f), 'utf8'));
  try {
    const conf = join(stateDir, '..', 'root', 'nats', 'nats-server.conf');
    const pid = execFileSync('pgrep', ['-f', `nats-server -c ${conf}`], { encoding: 'utf8' }).trim().split('\n')[0];
    if (pid) out['nats-server'] = Number(pid);
  } catch { /* joined an external NATS */ }
  return out;
}

/** Prints figures as a markdown table, Berth beside the reference with their ratio ('-' where one is missing). */
export function printRows(title, rows) {
  console.log(`| ${title} | berth | reference | berth/reference |`);
  console.log('| --- | --- | --- | --- |');
  for (const [k, a, b] of rows) console.log(`| ${k} | ${a} | ${b} | ${b === '-' ? '-' : (Number(a) / Number(b)).toFixed(2)} |`);
}
