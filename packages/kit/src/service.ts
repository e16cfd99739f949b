// The process around a service: configuration, the NATS connection (reconnecting forever:
// a NATS restart is an outage to ride out, not a reason to die), readiness, clean shutdown.
// A service is a function from this environment to a stop function; nothing global.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, credsAuthenticator, nkeyAuthenticator, usernamePasswordAuthenticator } from '@nats-io/transport-node';
import type { ConnectionOptions, NatsConnection } from '@nats-io/nats-core';
import { readyCodecsInBackground } from '@berth/bus';
import { dialHost, inboxPrefix, readCredential } from '@berth/natsd';
import { processConfig, serviceRoot, type Config } from './config.js';
import { serveHeap } from './heap.js';

export interface ServiceEnv {
  name: string;
  config: Config;
  node: string;
  nc: NatsConnection;
  /** this service's persistent folder */
  root: string;
}

export type Stop = () => Promise<void> | void;

export function natsUrl(config: Config): string {
  return config.nats.url || `nats://${dialHost(config.nats.host)}:${config.nats.port}`;
}

/** Who process `name` is on NATS and how it reaches the server: its credential, inbox prefix, TLS. */
export function natsAuth(config: Config, name: string): Pick<ConnectionOptions, 'authenticator' | 'inboxPrefix' | 'tls'> {
  const n = config.nats;
  const o: Pick<ConnectionOptions, 'authenticator' | 'inboxPrefix' | 'tls'> = {};
  if (n.credentials_dir) {
    const creds = join(n.credentials_dir, `${name}.creds`);
    const json = join(n.credentials_dir, `${name}.json`);
    if (existsSync(creds)) {
      o.authenticator = credsAuthenticator(readFileSync(creds));
      o.inboxPrefix = inboxPrefix(name);
    } else if (existsSync(json)) {
      const c = readCredential(json);
      o.authenticator = c.nkey_seed ? nkeyAuthenticator(new TextEncoder().encode(c.nkey_seed)) : usernamePasswordAuthenticator(c.user, c.password);
      o.inboxPrefix = c.inbox_prefix;
    } else {
      throw new Error(`no NATS credential for ${name}: neither ${json} nor ${creds}`);
    }
  }
  // the own server's certificate and key are its own; a cluster's may ask for ours
  const clientCert = n.url && n.tls_cert ? { certFile: n.tls_cert, keyFile: n.tls_key } : {};
  if (n.tls_ca || (!n.url && n.tls_cert) || clientCert.certFile) o.tls = { ...(n.tls_ca ? { caFile: n.tls_ca } : {}), ...clientCert };
  return o;
}

export async function connectNats(config: Config, name: string): Promise<NatsConnection> {
  // noAsyncTraces: no Error (with its stack) made up front for every request: it was a tenth of the
  // gateway's CPU under load
  return connect({
    servers: natsUrl(config),
    name: `berth-${name}-${config.node}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
    noAsyncTraces: true,
    ...natsAuth(config, name),
  });
}

export function log(name: string, ...args: unknown[]): void {
  console.log(new Date().toISOString(), `[${name}]`, ...args);
}

/** Runs a service as this process: call from a service's main.ts. */
export async function runService(name: string, start: (env: ServiceEnv) => Promise<Stop>): Promise<void> {
  // a service lives long: its codecs are readied before its first calls (@berth/api)
  readyCodecsInBackground();
  const config = processConfig();
  const nc = await connectNats(config, name);
  let stop: Stop;
  try {
    stop = await start({ name, config, node: config.node, nc, root: serviceRoot(config, name) });
  } catch (err) {
    console.error(`${name}: failed to start:`, err);
    process.exit(1);
  }
  serveHeap(nc, name, config.node);
  let stopping = false;
  const shutdown = async (signal: string, limit = 10_000) => {
    if (stopping) return;
    stopping = true;
    log(name, `${signal}: stopping`);
    const t = setTimeout(() => process.exit(1), limit);
    try {
      await stop();
      await nc.drain();
    } finally {
      clearTimeout(t);
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  // the supervisor is gone (the IPC channel closed): a service must not outlive it. (It also runs
  // us under PR_SET_PDEATHSIG where it can; this covers the rest, and leaves time for a clean stop.)
  process.on('disconnect', () => void shutdown('supervisor gone', 1500));
  // subscriptions are live on the server only after a round trip: only then is the service up
  await nc.flush();
  // the supervisor waits for this before it counts the service as up
  process.send?.({ ready: true });
  log(name, `ready on node ${config.node}`);
}
