// Runs the local stack: its own nats-server (unless pointed at a cluster), then every service
// as its own OS process, each with a log file, restarted with backoff when it dies. Every child
// dies with the supervisor (PR_SET_PDEATHSIG, and services also watch their IPC channel), and
// what an earlier run left behind is ended before anything starts.
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  answers,
  configFile,
  diesWithParent,
  isLoopback,
  stackUsers,
  startNatsServer,
  type NatsServer,
  type NatsServerOptions,
} from '@berth/natsd';
import { serviceNodeArgs, type Config } from '@berth/kit';
import { token } from '@berth/bus';
import { endLeftovers, rootFlag } from './leftovers.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function serviceEntry(name: string): string {
  return join(repo, 'services', name, 'dist', 'main.js');
}

export interface SupervisorEvents {
  log(msg: string): void;
}

function tail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).map((l) => `  ${l}`).join('\n');
  } catch {
    return '';
  }
}

/** One service process and its restarts. */
class Supervised {
  private child?: ChildProcess;
  private stopping = false;
  private failures = 0;
  private startedAt = 0;
  private restartTimer?: NodeJS.Timeout;
  readyOnce: Promise<void>;
  private markReady!: () => void;
  private failStart!: (err: Error) => void;
  private ready = false;

  constructor(readonly name: string, private readonly config: Config, private readonly logDir: string, private readonly out: SupervisorEvents) {
    this.readyOnce = new Promise((resolve, reject) => {
      this.markReady = resolve;
      this.failStart = reject;
    });
    this.readyOnce.catch(() => undefined);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): void {
    const logFile = join(this.logDir, `${this.name}.log`);
    const fd = openSync(logFile, 'a');
    this.startedAt = Date.now();
    const [execPath, ...wrap] = diesWithParent([process.execPath]);
    // the root on the command line: how a later run tells this process from any other
    const child = fork(serviceEntry(this.name), [rootFlag, this.config.root], {
      execPath,
      // BERTH_NODE_ARGS: extra node flags for every service (e.g. --cpu-prof), for profiling
      execArgv: [...wrap, ...serviceNodeArgs, ...(process.env.BERTH_NODE_ARGS ?? '').split(' ').filter(Boolean)],
      stdio: ['ignore', fd, fd, 'ipc'],
      env: { ...process.env, BERTH_CONFIG_JSON: JSON.stringify(this.config) },
    });
    closeSync(fd);
    this.child = child;
    // pid files let people (and tests) find a service process: <state>/pids/<name>.pid
    writeFileSync(join(this.logDir, '..', 'pids', `${this.name}.pid`), `${child.pid}\n`);
    child.on('message', (m: { ready?: boolean }) => {
      if (m?.ready) {
        this.ready = true;
        this.markReady();
        this.out.log(`${this.name} ready (pid ${child.pid})`);
      }
    });
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (this.stopping) return;
      // a service that never came up three times in a row will not: say why instead of looping
      if (!this.ready && this.failures >= 2) {
        this.failStart(new Error(`${this.name} exited before it was ready, 3 times (${signal ?? `code ${code}`}):\n${tail(logFile)}`));
        return;
      }
      // a process that ran a while before it died starts the backoff afresh
      if (Date.now() - this.startedAt > 10_000) this.failures = 0;
      const delay = Math.min(5000, 100 * 2 ** this.failures++);
      this.out.log(`${this.name} exited (${signal ?? `code ${code}`}); restarting in ${delay} ms (log: ${logFile})`);
      this.restartTimer = setTimeout(() => this.start(), delay);
    });
  }

  /** From now on an exit is the end, not a crash (a terminal's Ctrl-C reaches every process). */
  stopRestarting(): void {
    this.stopping = true;
    clearTimeout(this.restartTimer);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
}

export interface Stack {
  nats?: NatsServer;
  natsUrl: string;
  services: Map<string, Supervised>;
  stop(): Promise<void>;
}

/** Reachable at all? (Credentials and TLS are each service's to use: a refusal shows in its log.) */
async function reachable(url: string, limit: number): Promise<boolean> {
  const first = new URL(url.split(',')[0]!.trim().replace(/^(tls|nats):\/\//, 'http://'));
  const deadline = Date.now() + limit;
  do {
    if (await answers(first.hostname.replace(/^\[|\]$/g, ''), Number(first.port) || 4222)) return true;
    await new Promise((r) => setTimeout(r, 200));
  } while (Date.now() < deadline);
  return false;
}

export async function startStack(config: Config, out: SupervisorEvents, readyTimeout = 60_000): Promise<Stack> {
  const logDir = join(config.state, 'logs');
  // `events` and `json` would make a node's service subjects overlap event subjects
  if (['events', 'json'].includes(token(config.node))) throw new Error(`node id "${config.node}" is reserved: pick another (--node)`);
  const natsDir = join(config.root, 'nats');
  const own = !config.nats.url;
  if (own && !isLoopback(config.nats.host) && !(config.nats.tls_cert && config.nats.tls_key)) {
    throw new Error(`[nats] host ${config.nats.host} is beyond loopback: NATS there must be encrypted; set [nats] tls_cert and tls_key (and tls_ca for the services to check it)`);
  }
  if (Boolean(config.nats.tls_cert) !== Boolean(config.nats.tls_key)) throw new Error('[nats] tls_cert and tls_key go together');
  await endLeftovers(config.root, configFile(natsDir), out.log);
  mkdirSync(logDir, { recursive: true });
  mkdirSync(join(config.state, 'pids'), { recursive: true });
  mkdirSync(config.root, { recursive: true });
  writeFileSync(join(config.state, 'pids', 'berth.pid'), `${process.pid}\n`);
  let nats: NatsServer | undefined;
  let stopping = false;
  if (own) {
    // a user per process, an nkey each (reused across runs: a restarted process connects again)
    const credsDir = join(natsDir, 'creds');
    const users = stackUsers(credsDir, config.services, token(config.node));
    const tls = config.nats.tls_cert ? { cert: config.nats.tls_cert, key: config.nats.tls_key } : undefined;
    const opts: NatsServerOptions = { dir: natsDir, host: config.nats.host, port: config.nats.port, maxPayload: config.nats.max_payload, users, tls, maxProcs: config.nats.max_procs };
    nats = await startNatsServer(opts);
    out.log(`nats-server on ${nats.url} (pid ${nats.process.pid})`);
    out.log(`subscriber credentials ${join(credsDir, 'subscriber.json')}`);
    // the same port and store again: services reconnect by themselves, JetStream keeps its history
    opts.port = nats.port;
    const pidFile = join(config.state, 'pids', 'nats-server.pid');
    const watch = (n: NatsServer) => {
      writeFileSync(pidFile, `${n.process.pid}\n`);
      n.process.once('exit', (code, signal) => {
        if (stopping) return;
        // (a Ctrl-C reaches nats-server too, maybe before our own handler runs: decide a beat later)
        let said = false;
        const retry = (delay: number) =>
          setTimeout(() => {
            if (stopping) return;
            if (!said) out.log(`nats-server exited (${signal ?? `code ${code}`}); restarting`);
            said = true;
            startNatsServer(opts).then(
              (again) => {
                nats = again;
                out.log(`nats-server on ${again.url} (pid ${again.process.pid})`);
                watch(again);
              },
              () => retry(Math.min(5000, delay * 2)),
            );
          }, delay);
        retry(100);
      });
    };
    watch(nats);
    config = { ...config, nats: { ...config.nats, port: nats.port, credentials_dir: credsDir } };
  } else {
    if (!(await reachable(config.nats.url, 10_000))) throw new Error(`cannot reach NATS at ${config.nats.url} (10 s)`);
    if (!config.nats.credentials_dir) out.log(`NATS at ${config.nats.url} without credentials ([nats] credentials_dir): whoever reaches it can call every service`);
  }
  // (the BERTH_EVENTS stream is the events service's to make: only it may manage it)
  const services = new Map<string, Supervised>();
  const stop = async () => {
    stopping = true;
    for (const s of services.values()) s.stopRestarting();
    for (const s of [...services.values()].reverse()) await s.stop();
    await nats?.stop();
    rmSync(join(config.state, 'pids'), { recursive: true, force: true });
  };
  try {
    // every service at once, the gateway last: it serves the socket, so when it is ready the
    // whole API is (each service only needs NATS to start)
    const startGroup = async (names: string[]) => {
      await Promise.all(
        names.map(async (name) => {
          const s = new Supervised(name, config, logDir, out);
          services.set(name, s);
          s.start();
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            s.readyOnce,
            new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${name} not ready after ${readyTimeout} ms (log: ${join(logDir, name + '.log')})`)), readyTimeout))),
          ]).finally(() => clearTimeout(timer));
        }),
      );
    };
    await startGroup(config.services.filter((n) => n !== 'gateway'));
    if (config.services.includes('gateway')) await startGroup(['gateway']);
  } catch (err) {
    await stop();
    throw err;
  }
  return { get nats() { return nats; }, natsUrl: config.nats.url || nats!.url, services, stop };
}
