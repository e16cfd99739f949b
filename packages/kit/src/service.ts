// The process around a service: configuration, the NATS connection (reconnecting forever:
// a NATS restart is an outage to ride out, not a reason to die), readiness, clean shutdown.
// A service is a function from this environment to a stop function; nothing global.
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { processConfig, serviceRoot, type Config } from './config.js';

export interface ServiceEnv {
  name: string;
  config: Config;
  node: string;
  nc: NatsConnection;
  /** this service's persistent folder */
  root: string;
}

export type Stop = () => Promise<void> | void;

export async function connectNats(config: Config, name: string): Promise<NatsConnection> {
  const servers = config.nats.url || `nats://${config.nats.host}:${config.nats.port}`;
  // noAsyncTraces: no Error (with its stack) made up front for every request: it was a tenth of the
  // gateway's CPU under load
  return connect({ servers, name: `berth-${name}-${config.node}`, maxReconnectAttempts: -1, reconnectTimeWait: 250, waitOnFirstConnect: true, noAsyncTraces: true });
}

export function log(name: string, ...args: unknown[]): void {
  console.log(new Date().toISOString(), `[${name}]`, ...args);
}

/** Runs a service as this process: call from a service's main.ts. */
export async function runService(name: string, start: (env: ServiceEnv) => Promise<Stop>): Promise<void> {
  const config = processConfig();
  const nc = await connectNats(config, name);
  let stop: Stop;
  try {
    stop = await start({ name, config, node: config.node, nc, root: serviceRoot(config, name) });
  } catch (err) {
    console.error(`${name}: failed to start:`, err);
    process.exit(1);
  }
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(name, `${signal}: stopping`);
    const t = setTimeout(() => process.exit(1), 10_000);
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
  // subscriptions are live on the server only after a round trip: only then is the service up
  await nc.flush();
  // the supervisor waits for this before it counts the service as up
  process.send?.({ ready: true });
  log(name, `ready on node ${config.node}`);
}
