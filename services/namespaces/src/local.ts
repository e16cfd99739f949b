// The namespaces service's logic, as containerd 1.6 behaves (services/namespaces/local.go
// over metadata/namespaces.go): validation, labels by field path, the emptiness check before
// delete, and the /namespaces/* events. No NATS here: `usage` and `publish` are injected.
import { alreadyExists, BerthError, Code, failedPrecondition, notFound } from '@berth/errdefs';
import type { Topic } from '@berth/bus';
import type { Labels, NamespaceStore } from './store.js';
import { validateIdentifier, validateLabel } from '@berth/identifiers';

export interface Namespace {
  name: string;
  labels: Labels;
}

export type Publish = (namespace: string, topic: Topic, event: Record<string, unknown>) => Promise<unknown> | void;

export class Namespaces {
  /** one writer at a time: read-modify-write of labels must not interleave */
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: NamespaceStore,
    private readonly usage: (name: string) => Promise<string[]>,
    private readonly publish: Publish,
  ) {}

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** containerd answers a missing namespace with empty labels rather than NotFound. */
  async get(name: string): Promise<Namespace> {
    return { name, labels: (await this.store.labels(name)) ?? {} };
  }

  list(): Promise<Namespace[]> {
    return this.store.list();
  }

  async create(ns: Namespace, ctxNamespace: string): Promise<Namespace> {
    const labels = ns.labels ?? {};
    await this.serial(async () => {
      validateIdentifier(ns.name);
      for (const [k, v] of Object.entries(labels)) validateLabelIn(k, v);
      if (await this.store.labels(ns.name)) throw alreadyExists(`namespace "${ns.name}"`);
      await this.store.put(ns.name, dropEmpty(labels));
    });
    await this.publish(ctxNamespace, '/namespaces/create', { name: ns.name, labels });
    return { name: ns.name, labels };
  }

  /**
   * Without a mask the labels are replaced; with one, each `labels.<key>` path sets or (when
   * the new value is empty) removes that key. Like containerd, updating a namespace that does
   * not exist creates it.
   */
  async update(ns: Namespace, paths: string[], ctxNamespace: string): Promise<Namespace> {
    const labels = ns.labels ?? {};
    const result = await this.serial(async () => {
      const current = { ...((await this.store.labels(ns.name)) ?? {}) };
      let next: Labels;
      if (paths.length) {
        next = current;
        for (const p of paths) {
          if (!p.startsWith('labels.')) throw new BerthError(Code.InvalidArgument, `cannot update "${p}" field`);
          const key = p.slice('labels.'.length);
          const v = labels[key] ?? '';
          validateLabelIn(key, v);
          if (v === '') delete next[key];
          else next[key] = v;
        }
      } else {
        for (const [k, v] of Object.entries(labels)) validateLabelIn(k, v);
        next = dropEmpty(labels);
      }
      await this.store.put(ns.name, next);
      return { name: ns.name, labels: next };
    });
    await this.publish(ctxNamespace, '/namespaces/update', { name: ns.name, labels });
    return result;
  }

  async delete(name: string): Promise<void> {
    await this.serial(async () => {
      const kinds = await this.usage(name);
      if (kinds.length) throw failedPrecondition(`namespace "${name}" must be empty, but it still has ${kinds.join(', ')}`);
      if (!(await this.store.labels(name))) throw notFound(`namespace "${name}"`);
      await this.store.remove(name);
    });
    await this.publish(name, '/namespaces/delete', { name });
  }
}

function validateLabelIn(k: string, v: string): void {
  try {
    validateLabel(k, v);
  } catch (e) {
    throw (e as BerthError).wrap('namespace.Labels');
  }
}

function dropEmpty(labels: Labels): Labels {
  return Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ''));
}
