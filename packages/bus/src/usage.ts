// Namespaces across processes. containerd keeps every namespace's data in one bolt database, so
// "a namespace is listed once it holds anything" and "delete only an empty namespace" come from
// one transaction. Here the data is spread over services, and this module gives the same two
// guarantees with a small protocol every data-holding service runs through `NamespaceGuard`:
//
//  - Before a service first writes data in a namespace it asks the namespaces service to ensure
//    the namespace's record (`NamespaceEnsure`, created implicitly as containerd does).
//  - To delete a namespace, the namespaces service, holding that namespace's record lock, asks
//    every data-holding service of the node for its usage with `seal`: the service stops
//    starting writes in that namespace, waits for the ones in flight, forgets that the namespace
//    exists and answers what it still holds. Empty everywhere: the record is deleted. Either
//    way the namespaces service then releases the seal (`NamespaceRelease`).
//  - A write that meets a seal waits for the release, then ensures the namespace again. So a
//    write racing a delete either lands first (and the delete fails: not empty) or after (and
//    the namespace exists again): never data in a namespace that is not listed.
//
// A seal expires by itself (a namespaces service that died mid-delete must not block writes
// forever); since a sealed namespace is forgotten, the write after it ensures the namespace.
import { jsonBytes, parseJson } from './json.js';
import { BerthError, Code } from '@berth/errdefs';
import type { BusClient } from './client.js';
import type { BusServer } from './server.js';
import { rpcSubject } from './subjects.js';

export const usageMethod = 'NamespaceUsage';
export const releaseMethod = 'NamespaceRelease';
export const ensureMethod = 'NamespaceEnsure';

/** The services that keep namespaced data, in containerd's order of kinds (leases hold no kind of their own, but their records go with the namespace). */
export const namespacedServices = ['images', 'content', 'containers', 'snapshot', 'leases'];

const sealTimeout = 30_000;

export interface GuardOptions {
  /** what this service still holds in a namespace, as containerd names the kinds */
  kinds: (namespace: string) => Promise<string[]>;
  /** the namespace was deleted: drop what goes with it (a lease) */
  deleted?: (namespace: string) => Promise<void>;
  /** ensures the namespace's record; undefined: nothing to ensure (a service tested alone) */
  ensure?: (namespace: string) => Promise<void>;
}

interface Seal {
  released: Promise<void>;
  release: () => void;
  timer: NodeJS.Timeout;
}

export class NamespaceGuard {
  private readonly known = new Set<string>();
  private readonly seals = new Map<string, Seal>();
  private readonly inflight = new Map<string, { n: number; drained: (() => void)[] }>();

  constructor(private readonly o: GuardOptions) {}

  /** Runs `fn`, a write that creates data in `namespace`, while the namespace exists and is not being deleted. */
  async write<T>(namespace: string, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const seal = this.seals.get(namespace);
      if (seal) {
        await seal.released;
        continue;
      }
      if (!this.known.has(namespace)) {
        await this.o.ensure?.(namespace);
        if (this.seals.has(namespace)) continue; // sealed while we asked: ask again after
        this.known.add(namespace);
      }
      break;
    }
    const f = this.inflight.get(namespace) ?? { n: 0, drained: [] };
    this.inflight.set(namespace, f);
    f.n++;
    try {
      return await fn();
    } finally {
      if (--f.n === 0) {
        this.inflight.delete(namespace);
        for (const d of f.drained.splice(0)) d();
      }
    }
  }

  /** Stops new writes in `namespace`, waits for those in flight, and says what is left. */
  async seal(namespace: string): Promise<string[]> {
    if (!this.seals.has(namespace)) {
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      const timer = setTimeout(() => this.release(namespace, false), sealTimeout);
      timer.unref();
      this.seals.set(namespace, { released, release, timer });
    }
    this.known.delete(namespace);
    const f = this.inflight.get(namespace);
    if (f) await new Promise<void>((r) => f.drained.push(r));
    return this.o.kinds(namespace);
  }

  async release(namespace: string, deleted: boolean): Promise<void> {
    const seal = this.seals.get(namespace);
    try {
      if (deleted) await this.o.deleted?.(namespace);
    } finally {
      if (seal) {
        clearTimeout(seal.timer);
        this.seals.delete(namespace);
        seal.release();
      }
    }
  }

  /** Answers the namespaces service's usage and release calls on `server`. */
  serve(server: BusServer): void {
    server.raw(usageMethod, async (data, ctx) => {
      const { seal } = parseJson<{ seal?: boolean }>(data);
      const ns = ctx.namespace ?? '';
      return jsonBytes({ kinds: seal ? await this.seal(ns) : await this.o.kinds(ns) });
    });
    server.raw(releaseMethod, async (data, ctx) => {
      await this.release(ctx.namespace ?? '', parseJson<{ deleted?: boolean }>(data).deleted === true);
      return jsonBytes({});
    });
  }
}

/** A guard whose namespaces are ensured by this node's namespaces service (when `services`, the node's, include it). */
export function namespaceGuard(client: BusClient, node: string, services: string[], o: Omit<GuardOptions, 'ensure'>): NamespaceGuard {
  if (!services.includes('namespaces')) return new NamespaceGuard(o);
  return new NamespaceGuard({
    ...o,
    ensure: async (namespace) => {
      try {
        await client.unary(rpcSubject(node, 'namespaces', ensureMethod), new Uint8Array(), { namespace }, { timeout: 10_000 });
      } catch (e) {
        if (e instanceof BerthError && e.code === Code.Unavailable) throw new BerthError(Code.Unavailable, `namespace "${namespace}": namespaces service not running`);
        throw e;
      }
    },
  });
}

/**
 * Seals `namespace` in each of `services` and returns everything they still hold. One that does
 * not answer makes the answer Unavailable: a namespace is never removed while data in it may
 * still exist. Call `releaseNamespace` afterwards, whatever happened.
 */
export async function sealNamespace(client: BusClient, node: string, services: string[], namespace: string): Promise<string[]> {
  const asked = namespacedServices.filter((s) => services.includes(s));
  const answers = await Promise.all(
    asked.map(async (s) => {
      try {
        const res = await client.unary(rpcSubject(node, s, usageMethod), jsonBytes({ seal: true }), { namespace }, { timeout: 10_000 });
        return parseJson<{ kinds: string[] }>(res).kinds;
      } catch (e) {
        if (e instanceof BerthError && e.code === Code.Unavailable) {
          throw new BerthError(Code.Unavailable, `namespace "${namespace}": cannot tell whether it is empty: ${s} service not running`);
        }
        throw e;
      }
    }),
  );
  return answers.flat();
}

/** Lifts the seal in every service (best effort: a seal also expires by itself). */
export async function releaseNamespace(client: BusClient, node: string, services: string[], namespace: string, deleted: boolean): Promise<void> {
  const asked = namespacedServices.filter((s) => services.includes(s));
  await Promise.all(
    asked.map((s) => client.unary(rpcSubject(node, s, releaseMethod), jsonBytes({ deleted }), { namespace }, { timeout: 10_000 }).catch(() => undefined)),
  );
}

/** Answers the namespaces service's `NamespaceEnsure`. */
export function serveNamespaceEnsure(server: BusServer, ensure: (namespace: string) => Promise<void>): void {
  server.raw(ensureMethod, async (_data, ctx) => {
    await ensure(ctx.namespace ?? '');
    return new Uint8Array();
  });
}
