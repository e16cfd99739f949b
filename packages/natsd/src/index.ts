// Runs Debian's nats-server with JetStream for the local stack and for tests: with users and
// their permissions (./auth.ts) and TLS when asked, and tied to the life of the process that
// started it (it must not outlive a supervisor that was killed).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { authorizationConf, type AuthUser } from './auth.js';

export * from './auth.js';

export interface NatsServerOptions {
  /** where JetStream keeps its files, the config and the log */
  dir: string;
  /** 0 picks a free port */
  port?: number;
  host?: string;
  /** largest message; gRPC allows 16 MiB messages, so the bus must carry them */
  maxPayload?: number;
  binary?: string;
  /** the users that may connect, with their permissions; absent: no authentication (unit tests) */
  users?: AuthUser[];
  /** the server's certificate: clients must then speak TLS */
  tls?: { cert: string; key: string; ca?: string };
  /** GOMAXPROCS of nats-server; 0 or absent: Go's default (every core) */
  maxProcs?: number;
}

export interface NatsServer {
  url: string;
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = tcpConnect({ host, port }, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Where clients dial a server that listens on `host` (a wildcard address is reached on loopback). */
export function dialHost(host: string): string {
  return host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
}

/** The config file of a server in `dir`: the mark by which a later run finds a server left behind. */
export function configFile(dir: string): string {
  return join(dir, 'nats-server.conf');
}

// PR_SET_PDEATHSIG through util-linux's setpriv (exec'd: the pid stays nats-server's): the kernel
// kills nats-server when the process that started it dies, however it dies.
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** argv that runs `argv` so that it dies with this process (as it is, where setpriv is missing). */
export function diesWithParent(argv: string[]): string[] {
  return setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...argv] : argv;
}

export async function startNatsServer(o: NatsServerOptions): Promise<NatsServer> {
  const host = o.host ?? '127.0.0.1';
  const port = o.port || (await freePort(host));
  mkdirSync(join(o.dir, 'jetstream'), { recursive: true });
  const conf = configFile(o.dir);
  const q = JSON.stringify;
  writeFileSync(
    conf,
    [
      `listen: ${q(`${host}:${port}`)}`,
      `max_payload: ${o.maxPayload ?? 20 * 1024 * 1024}`,
      `jetstream { store_dir: ${q(join(o.dir, 'jetstream'))} }`,
      ...(o.tls ? [`tls { cert_file: ${q(o.tls.cert)}, key_file: ${q(o.tls.key)}${o.tls.ca ? `, ca_file: ${q(o.tls.ca)}` : ''}, timeout: 2 }`] : []),
      ...(o.users ? [authorizationConf(o.users)] : []),
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  chmodSync(conf, 0o600);
  const log = openSync(join(o.dir, 'nats-server.log'), 'a');
  const [cmd, ...args] = diesWithParent([o.binary ?? 'nats-server', '-c', conf]);
  const env = { ...process.env };
  if (o.maxProcs) env.GOMAXPROCS = String(o.maxProcs);
  const proc = spawn(cmd!, args, { stdio: ['ignore', log, log], env });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let failed: Error | undefined;
  proc.once('error', (e) => (failed = e));
  const dial = dialHost(host);
  for (let i = 0; i < 100 && !failed && proc.exitCode === null; i++) {
    if (await answers(dial, port)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (failed || proc.exitCode !== null || !(await answers(dial, port))) {
    proc.kill('SIGKILL');
    throw new Error(`nats-server did not start on ${host}:${port} (${failed?.message ?? `see ${join(o.dir, 'nats-server.log')}`})`);
  }
  return {
    url: `nats://${dial}:${port}`,
    port,
    process: proc,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
