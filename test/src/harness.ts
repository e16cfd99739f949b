// Starting the real stack and the reference containerd for integration tests, and running the
// real ctr against either.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, nkeyAuthenticator, usernamePasswordAuthenticator } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { readCredential } from '@berth/natsd';

export const repo = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
export const shared = resolve(repo, '..', 'shared');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export function run(cmd: string, args: string[], opts: { timeout?: number; input?: string } = {}): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolveRun) => {
    const child = execFile(cmd, args, { timeout: opts.timeout ?? 30_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolveRun({ code, stdout: String(stdout), stderr: String(stderr), ms: Date.now() - t0 });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

export function ctr(sock: string, ...args: string[]): Promise<Run> {
  return run('ctr', ['--connect-timeout', '3s', '--address', sock, ...args]);
}

export interface Stack {
  dir: string;
  sock: string;
  state: string;
  root: string;
  /** the NATS URL the stack uses */
  natsUrl: string;
  /** the credential file of `name` (a service, or `subscriber`) */
  credentials(name?: string): string;
  proc: ChildProcess;
  output: () => string;
  pid(service: string): number;
  /** SIGTERM, wait for the exit; the temp dirs go too unless `keep` */
  stop(keep?: boolean): Promise<number | null>;
}

/**
 * `berth up` in temp dirs, as a user runs it; resolves once it printed `berth: ready`. `env`: more
 * environment for every process of the stack (e.g. BERTH_NODE_ARGS, BERTH_DEBUG_HEAP).
 */
export async function startStack(opts: { natsUrl?: string; node?: string; config?: string; dir?: string; env?: Record<string, string> } = {}): Promise<Stack> {
  const dir = opts.dir ?? mkdtempSync('/tmp/berth-it-');
  const state = join(dir, 'state');
  const root = join(dir, 'root');
  const nats = opts.natsUrl ? ['--nats-url', opts.natsUrl] : ['--nats-port', '0'];
  const config = opts.config ? ['--config', opts.config] : [];
  const proc = spawn(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'up', ...config, '--root', root, '--state', state, ...nats, '--node', opts.node ?? 'it-node'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  });
  let out = '';
  proc.stdout!.on('data', (b) => (out += b));
  proc.stderr!.on('data', (b) => (out += b));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const sock = await new Promise<string>((resolveReady, reject) => {
    const t = setTimeout(() => {
      // a stack that never got ready must not keep the test process (and its services) alive
      proc.kill('SIGTERM');
      reject(new Error(`stack not ready in 60 s:\n${out}`));
    }, 60_000);
    const check = () => {
      const m = /berth: ready (\S+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolveReady(m[1]!);
      }
    };
    proc.stdout!.on('data', check);
    void exited.then((code) => reject(new Error(`berth up exited ${code}:\n${out}`)));
  });
  const credentials = (name = 'subscriber') => {
    const m = /subscriber credentials (\S+)/.exec(out);
    if (m) return join(m[1]!, '..', `${name}.json`);
    throw new Error('this stack has no credentials of its own (--nats-url)');
  };
  return {
    dir,
    sock,
    state,
    root,
    natsUrl: opts.natsUrl ?? /nats-server on (\S+)/.exec(out)![1]!,
    credentials,
    proc,
    output: () => out,
    pid: (service) => Number(readFileSync(join(state, 'pids', `${service}.pid`), 'utf8')),
    async stop(keep = false) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await exited;
      if (!keep) {
        endShimHosts(join(state, 'shim'));
        rmSync(dir, { recursive: true, force: true });
      }
      return code;
    },
  };
}

/**
 * Berth's shim host outlives `berth up` by design (it serves running containers); a stack whose
 * folders go ends the hosts of its state, found by command line.
 */
export function endShimHosts(stateDir: string): void {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('host');
      if (i > 0 && argv[i - 1]!.endsWith('shim/dist/main.js') && argv[i + 1] === '--state' && argv[i + 2] === stateDir) process.kill(Number(d), 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/** A NATS connection as a Berth user would make it: with a credential file (see README). */
export async function natsWith(servers: string, credentialFile: string, more: Record<string, unknown> = {}): Promise<NatsConnection> {
  const c = readCredential(credentialFile);
  const authenticator = c.nkey_seed ? nkeyAuthenticator(new TextEncoder().encode(c.nkey_seed)) : usernamePasswordAuthenticator(c.user, c.password);
  return connect({ servers, authenticator, inboxPrefix: c.inbox_prefix, ...more });
}

export interface Reference {
  sock: string;
  stop(): Promise<void>;
}

/** The reference containerd 1.6.20 from ../shared/testenv, or undefined when shared/ is absent. */
export async function startReference(): Promise<Reference | undefined> {
  const script = join(shared, 'testenv', 'reference-containerd.sh');
  if (!existsSync(script)) return undefined;
  const dir = mkdtempSync('/tmp/berth-ref-');
  const r = await run(script, ['start', dir], { timeout: 120_000 });
  if (r.code !== 0) throw new Error(`reference containerd did not start: ${r.stderr}`);
  return {
    sock: r.stdout.trim().split('\n').at(-1)!,
    async stop() {
      await run(script, ['stop', dir], { timeout: 60_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `ctr content ls` as a set: digest, size and labels in key order (ctr prints labels unordered). */
export function contentSet(r: Run): string[] {
  return r.stdout
    .split('\n')
    .slice(1)
    .filter(Boolean)
    .map((l) => {
      const f = l.split('\t').filter(Boolean);
      return `${f[0]} ${f[1]} ${(f[3] ?? '').split(',').sort().join(',')}`;
    })
    .sort();
}

/**
 * A config file that runs Berth's collector as the reference containerd runs it: after deletions
 * only (no timer, no mutation trigger). Tests that compare unleased content or snapshots with the
 * reference start their stack with it and await each removal's collection (`collect` in grpc.ts).
 */
export function referenceLikeGc(dir: string, opts: { afterDeletions?: boolean } = {}): string {
  const file = join(dir, 'gc-like-reference.toml');
  // afterDeletions false: no automatic collection at all (for tests whose removals run
  // concurrently). A high deletion threshold alone was not that: the scheduler's next tick still
  // collects once any deletion happened (its rate set by pause_threshold), and a collection
  // skipped because a service was down (a kill -9 test) retried a second later and took the
  // test's unleased blob in the middle of its reads. So no start-up collection either, and ticks
  // hours apart; only a synchronous lease delete or `berth gc` collects.
  const deletions = opts.afterDeletions === false ? 'deletion_threshold = 1000000\npause_threshold = 0.00001\nstartup_delay = "24h"\n' : '';
  writeFileSync(file, `[gc]\ninterval = "24h"\nmutation_threshold = 1000000\n${deletions}`);
  return file;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns true; resolves with the ms it took, rejects after `limit`. */
export async function until(fn: () => Promise<boolean>, limit: number, what: string): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < limit) {
    if (await fn()) return Date.now() - t0;
    await sleep(50);
  }
  throw new Error(`${what}: not within ${limit} ms`);
}
