// Runs Debian's nats-server with JetStream for the local stack and for tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';

export interface NatsServerOptions {
  /** where JetStream keeps its files, the config and the log */
  dir: string;
  /** 0 picks a free port */
  port?: number;
  host?: string;
  /** largest message; gRPC allows 16 MiB messages, so the bus must carry them */
  maxPayload?: number;
  binary?: string;
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

function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = tcpConnect({ host, port }, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

export async function startNatsServer(o: NatsServerOptions): Promise<NatsServer> {
  const host = o.host ?? '127.0.0.1';
  const port = o.port || (await freePort(host));
  mkdirSync(join(o.dir, 'jetstream'), { recursive: true });
  const conf = join(o.dir, 'nats-server.conf');
  writeFileSync(
    conf,
    [
      `listen: "${host}:${port}"`,
      `max_payload: ${o.maxPayload ?? 20 * 1024 * 1024}`,
      `jetstream { store_dir: "${join(o.dir, 'jetstream')}" }`,
      '',
    ].join('\n'),
  );
  const log = openSync(join(o.dir, 'nats-server.log'), 'a');
  const proc = spawn(o.binary ?? 'nats-server', ['-c', conf], { stdio: ['ignore', log, log] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let failed: Error | undefined;
  proc.once('error', (e) => (failed = e));
  for (let i = 0; i < 100 && !failed && proc.exitCode === null; i++) {
    if (await answers(host, port)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (failed || proc.exitCode !== null || !(await answers(host, port))) {
    proc.kill('SIGKILL');
    throw new Error(`nats-server did not start on ${host}:${port} (${failed?.message ?? `see ${join(o.dir, 'nats-server.log')}`})`);
  }
  return {
    url: `nats://${host}:${port}`,
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
