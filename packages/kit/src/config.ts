// Berth's configuration: one TOML file like containerd's config.toml, with a section per
// service. The supervisor resolves file + flags once and hands the result to every process it
// starts (BERTH_CONFIG_JSON), so all of them see the same settings.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'smol-toml';

export interface Config {
  version: number;
  /** persistent data: stores, blobs, snapshots (one folder per service) */
  root: string;
  /** runtime state: sockets, pid files, logs */
  state: string;
  /** this node's id: the token in every node-local subject */
  node: string;
  grpc: {
    address: string;
    /** octal, as a string: the socket's mode */
    mode: string;
    /** owner and group of the socket (containerd's [grpc] uid/gid) */
    uid: number;
    gid: number;
    max_recv_message_size: number;
    max_send_message_size: number;
  };
  nats: {
    /** an existing cluster to join; empty: the stack starts its own nats-server */
    url: string;
    port: number;
    /** where the own nats-server listens; anything but loopback needs tls_cert and tls_key */
    host: string;
    max_payload: number;
    /**
     * with `url`: a folder of credentials, `<process>.json` (see @berth/natsd's Credential) or
     * `<process>.creds` (a JWT creds file), one per process. The own nats-server makes its own
     * under `<root>/nats/creds`.
     */
    credentials_dir: string;
    /** CA that signed the NATS server's certificate: the connection is then TLS */
    tls_ca: string;
    /** the own nats-server's certificate and key; with `url`, the client certificate (if the cluster asks for one) */
    tls_cert: string;
    tls_key: string;
    /**
     * GOMAXPROCS of the own nats-server (0: every core). 1 by default: the stack's calls are
     * small request/replies one after another, and with one Go thread nats-server hands a
     * message from the connection it reads to the one it writes without waking another thread
     * (measured, 3 paired rounds: 65-98 against 128-270 µs of its CPU per request/reply, p50
     * 210-304 against 337-407 µs; 8 callers at once: the same throughput on less CPU).
     */
    max_procs: number;
  };
  /** which services the stack runs, in start order */
  services: string[];
  events: {
    /** JetStream history limits */
    max_age: string;
    max_bytes: number;
  };
  content: {
    /** containerd's content_sharing_policy: "shared" (a blob another namespace has is not sent again) or "isolated" */
    sharing_policy: string;
  };
  /**
   * garbage collection (services/gc): containerd's [plugins."io.containerd.gc.v1.scheduler"]
   * settings under their names, durations as Go writes them ("100ms", "1m"), plus Berth's own
   */
  gc: {
    pause_threshold: number;
    deletion_threshold: number;
    mutation_threshold: number;
    schedule_delay: string;
    startup_delay: string;
    /** Berth: collect at least this often, so what expired (a lease's gc.expire) goes without waiting for a deletion; "0" never */
    interval: string;
    /** Berth: how long services hold writes for one collection at most before its barrier lapses by itself */
    barrier_timeout: string;
  };
  images: {
    /** a Docker-style config.json whose `auths` hold registry credentials; empty: none */
    registry_config: string;
    /** registry hosts spoken to over plain HTTP (`127.0.0.1:5000`) */
    plain_http: string[];
    /** per registry host, mirror base URLs tried before it (`http://127.0.0.1:5001`) */
    mirrors: Record<string, string[]>;
    /** layers a server-side pull fetches at once */
    max_concurrent_downloads: number;
  };
  tasks: {
    /**
     * which shim runs a container's runtime: "berth" (Berth's resident shim host) or "stock"
     * (Debian's containerd-shim-runc-v2, a process per container, as containerd runs it)
     */
    runtimes: Record<string, string>;
  };
}

export function defaultConfig(): Config {
  return {
    version: 1,
    root: '/var/lib/berth',
    state: '/run/berth',
    node: hostname(),
    grpc: { address: '/run/berth/berth.sock', mode: '0660', uid: 0, gid: 0, max_recv_message_size: 16 << 20, max_send_message_size: 16 << 20 },
    nats: { url: '', port: 4222, host: '127.0.0.1', max_payload: 20 << 20, credentials_dir: '', tls_ca: '', tls_cert: '', tls_key: '', max_procs: 1 },
    services: ['events', 'namespaces', 'content', 'leases', 'images', 'containers', 'snapshot', 'diff', 'tasks', 'gc', 'gateway'],
    events: { max_age: '24h', max_bytes: 1 << 30 },
    content: { sharing_policy: 'shared' },
    images: { registry_config: '', plain_http: [], mirrors: {}, max_concurrent_downloads: 2 },
    gc: { pause_threshold: 0.02, deletion_threshold: 0, mutation_threshold: 100, schedule_delay: '0ms', startup_delay: '100ms', interval: '1m', barrier_timeout: '10s' },
    tasks: { runtimes: { 'io.containerd.runc.v2': 'berth', 'io.containerd.runc.v1': 'berth', 'io.containerd.runtime.v1.linux': 'berth' } },
  };
}

function merge<T>(base: T, over: unknown, path = ''): T {
  if (over === undefined) return base;
  if (typeof base !== 'object' || base === null || Array.isArray(base)) {
    if (typeof over !== typeof base) throw new Error(`config: ${path || 'value'} must be a ${Array.isArray(base) ? 'list' : typeof base}`);
    return over as T;
  }
  if (typeof over !== 'object' || over === null) throw new Error(`config: ${path} must be a table`);
  const out = { ...base } as Record<string, unknown>;
  // an empty table by default is a map of the user's keys (images.mirrors)
  const freeMap = Object.keys(base as object).length === 0;
  for (const [k, v] of Object.entries(over)) {
    if (!(k in out) && !freeMap) throw new Error(`config: unknown setting ${path ? path + '.' : ''}${k}`);
    out[k] = freeMap ? v : merge(out[k], v, path ? `${path}.${k}` : k);
  }
  return out as T;
}

/** Defaults, then the TOML file (if any), then explicit overrides. */
export function loadConfig(file?: string, overrides: Partial<Config> = {}): Config {
  let cfg = defaultConfig();
  if (file) cfg = merge(cfg, parse(readFileSync(file, 'utf8')));
  // a root or state given alone moves what lives under it by default
  const o = { ...overrides } as Record<string, unknown>;
  cfg = merge(cfg, o);
  if (overrides.state && !overrides.grpc?.address && cfg.grpc.address === defaultConfig().grpc.address) cfg.grpc.address = join(cfg.state, 'berth.sock');
  return cfg;
}

export function configToml(cfg: Config = defaultConfig()): string {
  return stringify(cfg as unknown as Record<string, unknown>) + '\n';
}

/** The configuration a process was started with (by the supervisor), or from --config. */
export function processConfig(argv = process.argv.slice(2)): Config {
  const json = process.env.BERTH_CONFIG_JSON;
  if (json) return merge(defaultConfig(), JSON.parse(json));
  const i = argv.indexOf('--config');
  return loadConfig(i >= 0 ? argv[i + 1] : undefined);
}

/** Where service `name` keeps its persistent data. */
export function serviceRoot(cfg: Config, name: string): string {
  return join(cfg.root, name);
}
