// The namespaces service's logic, as containerd 1.6 behaves (services/namespaces/local.go
// over metadata/namespaces.go): validation, labels by field path, the emptiness check before
// delete, implicit creation when data is first written, and the /namespaces/* events (written
// with the record, through the outbox). No NATS here: `usage` and `events` are injected.
import { alreadyExists, BerthError, Code, failedPrecondition, notFound } from '@berth/errdefs';
import { namespaceRequired, type EventSink } from '@berth/bus';
import { validateIdentifier, validateLabel } from '@berth/identifiers';
import { nsKey, type Labels, type NamespaceStore } from './store.js';

export interface Namespace {
  name: string;
  labels: Labels;
}

/** The other services' side of a delete (see @berth/bus usage.ts): seal and report, then release. */
export interface Usage {
  seal(name: string): Promise<string[]>;
  release(name: string, deleted: boolean): Promise<void>;
}

export class Namespaces {
  constructor(
    private readonly store: NamespaceStore,
    private readonly usage: Usage,
    private readonly events: EventSink,
  ) {}

  /** containerd answers a missing namespace with empty labels rather than NotFound. */
  async get(name: string): Promise<Namespace> {
    return { name, labels: (await this.store.labels(name)) ?? {} };
  }

  list(): Promise<Namespace[]> {
    return this.store.list();
  }

  async create(ns: Namespace, ctxNamespace: string): Promise<Namespace> {
    const labels = ns.labels ?? {};
    validateIdentifier(ns.name);
    for (const [k, v] of Object.entries(labels)) validateLabelIn(k, v);
    return this.store.db.transact([nsKey(ns.name)], async (tx) => {
      if (await this.store.labels(ns.name, tx)) throw alreadyExists(`namespace "${ns.name}"`);
      this.store.put(tx, ns.name, dropEmpty(labels));
      this.events.emit(tx, ctxNamespace, '/namespaces/create', { name: ns.name, labels });
      return { name: ns.name, labels };
    });
  }

  /**
   * A service is about to write data in `name`: the namespace exists from now on (containerd
   * creates it implicitly, without an event). Waits while the namespace is being deleted.
   */
  async ensure(name: string): Promise<void> {
    namespaceRequired({ namespace: name });
    await this.store.db.transact([nsKey(name)], async (tx) => {
      if (!(await this.store.labels(name, tx))) this.store.put(tx, name, {});
    });
  }

  /**
   * Without a mask the labels are replaced; with one, each `labels.<key>` path sets or (when
   * the new value is empty) removes that key. Like containerd, updating a namespace that does
   * not exist creates it.
   */
  async update(ns: Namespace, paths: string[], ctxNamespace: string): Promise<Namespace> {
    const labels = ns.labels ?? {};
    validateIdentifier(ns.name);
    return this.store.db.transact([nsKey(ns.name)], async (tx) => {
      const current = { ...((await this.store.labels(ns.name, tx)) ?? {}) };
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
      this.store.put(tx, ns.name, next);
      this.events.emit(tx, ctxNamespace, '/namespaces/update', { name: ns.name, labels });
      return { name: ns.name, labels: next };
    });
  }

  /**
   * Holding the namespace's record, seals it in every data-holding service (no new data
   * starts there, the writes in flight finish), and deletes it only if nothing is left.
   */
  async delete(name: string): Promise<void> {
    // no such namespace can exist (containerd answers NotFound too); and it is no header to send
    if (!isIdentifier(name)) throw notFound(`namespace "${name}"`);
    let deleted = false;
    try {
      await this.store.db.transact([nsKey(name)], async (tx) => {
        const kinds = await this.usage.seal(name);
        if (kinds.length) throw failedPrecondition(`namespace "${name}" must be empty, but it still has ${kinds.join(', ')}`);
        if (!(await this.store.labels(name, tx))) throw notFound(`namespace "${name}"`);
        this.store.del(tx, name);
        this.events.emit(tx, name, '/namespaces/delete', { name });
        tx.afterCommit(() => (deleted = true));
      });
    } finally {
      await this.usage.release(name, deleted);
    }
  }
}

function isIdentifier(s: string): boolean {
  try {
    validateIdentifier(s);
    return true;
  } catch {
    return false;
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
