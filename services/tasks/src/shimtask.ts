// One task's shim, as the tasks service holds it: its bundle, and a ttrpc connection to its
// containerd.task.v2.Task socket, made lazily (a restarted tasks service serves at once and
// connects to each shim on first use) and made again after a drop. A connection that drops
// while nobody is deleting the task is reported, so the manager can tell a dead shim.
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { join } from 'node:path';
import { service } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import { TtrpcClient, serviceClient, type CallOptions, type TypedClient } from '@berth/ttrpc';
import type { BundleInfo } from './bundle.js';
import type { Process } from './local.js';

const taskService = service('containerd.task.v2.Task');

export function socketOf(address: string): string {
  return address.trim().replace(/^unix:\/\//, '');
}

export class ShimTask {
  private client?: TtrpcClient;
  private api?: TypedClient;
  private connecting?: Promise<TypedClient>;
  /** the stock shim's log fifo, held open */
  log?: net.Socket;
  /** set while the tasks service itself ends the shim: its connection closing is expected */
  deleting = false;
  closed = false;
  /** the Create's stdio (unknown to a restarted tasks service): part of the init's state */
  stdio?: { stdin: string; stdout: string; stderr: string; terminal: boolean };
  /**
   * The init process's state once it has exited: it no longer changes until the task is deleted,
   * so a Get after the exit (dockerd asks twice, ctr once) needs no round trip to the shim.
   */
  final?: Process;

  constructor(
    readonly info: BundleInfo,
    readonly bundle: string,
    private readonly lost: (t: ShimTask) => void,
  ) {}

  get namespace(): string {
    return this.info.namespace;
  }

  get id(): string {
    return this.info.id;
  }

  address(): string {
    return readFileSync(join(this.bundle, 'address'), 'utf8');
  }

  connect(address?: string): Promise<TypedClient> {
    if (this.api) return Promise.resolve(this.api);
    this.connecting ??= (async () => {
      let client: TtrpcClient;
      try {
        client = await TtrpcClient.connect(socketOf(address ?? this.address()), { timeoutMs: 5000 });
      } catch (e) {
        throw new BerthError(Code.Unavailable, `connect to shim of task ${this.id}: ${(e as Error).message}`);
      }
      this.client = client;
      this.api = serviceClient(client, taskService);
      void client.closed.then(() => {
        this.client = this.api = undefined;
        if (!this.deleting && !this.closed) this.lost(this);
      });
      return this.api;
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** A call on the task's shim, with the namespace as containerd sends it. */
  async call<T = any>(method: string, req: Record<string, unknown>, opts: CallOptions = {}): Promise<T> {
    const api = await this.connect();
    return api[method]!(req, { ...opts, metadata: { 'containerd-namespace-ttrpc': this.namespace, ...(opts.metadata ?? {}) } }) as Promise<T>;
  }

  /** Drops the connection (the shim stays). */
  close(): void {
    this.closed = true;
    this.client?.close();
    this.log?.destroy();
  }
}
