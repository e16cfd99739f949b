// Container records as containerd 1.6 keeps them (metadata/containers.go, services/containers):
// per namespace, by id; the runtime spec, runtime options and extensions kept byte for byte as
// the client sent them; updates by field path; the /containers/* events in the record's batch.
import { BerthError, Code, alreadyExists, invalidArgument, notFound, toBerthError } from '@berth/errdefs';
import { parseAll, type Filter } from '@berth/filters';
import { validateIdentifier, validateLabel } from '@berth/identifiers';
import { key, prefix, unescapePart, type Store } from '@berth/store';
import type { EventSink, GcRecords, NamespaceGuard } from '@berth/bus';
import type { Any, Timestamp } from '@berth/api';

export interface Runtime {
  name: string;
  options: Any | null;
}

/** A container as the API carries it (containerd.services.containers.v1.Container). */
export interface Container {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime: Runtime | null;
  spec: Any | null;
  snapshotter: string;
  snapshot_key: string;
  created_at: Timestamp | null;
  updated_at: Timestamp | null;
  extensions: Record<string, Any>;
}

// The store holds JSON: an Any's bytes go in as base64 and come out as the same bytes.
interface StoredAny {
  type_url: string;
  value: string;
}

interface Stored {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime: { name: string; options: StoredAny | null };
  spec: StoredAny | null;
  snapshotter: string;
  snapshot_key: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  extensions: Record<string, StoredAny>;
}

const storeAny = (a: Any): StoredAny => ({ type_url: a.type_url ?? '', value: Buffer.from(a.value ?? new Uint8Array()).toString('base64') });
const loadAny = (a: StoredAny): Any => ({ type_url: a.type_url, value: Buffer.from(a.value, 'base64') });
const mapValues = <A, B>(m: Record<string, A>, f: (a: A) => B) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, f(v)]));

function toApi(s: Stored): Container {
  return {
    id: s.id,
    labels: s.labels,
    image: s.image,
    // containerd always answers with a runtime, even an empty one
    runtime: { name: s.runtime.name, options: s.runtime.options && loadAny(s.runtime.options) },
    spec: s.spec && loadAny(s.spec),
    snapshotter: s.snapshotter,
    snapshot_key: s.snapshot_key,
    created_at: s.created_at,
    updated_at: s.updated_at,
    extensions: mapValues(s.extensions, loadAny),
  };
}

/** The request's container in the stored shape (timestamps are the store's to set). */
function fromApi(c: Container, at: Timestamp): Stored {
  return {
    id: c.id ?? '',
    labels: { ...(c.labels ?? {}) },
    image: c.image ?? '',
    runtime: { name: c.runtime?.name ?? '', options: c.runtime?.options ? storeAny(c.runtime.options) : null },
    spec: c.spec ? storeAny(c.spec) : null,
    snapshotter: c.snapshotter ?? '',
    snapshot_key: c.snapshot_key ?? '',
    created_at: at,
    updated_at: at,
    extensions: mapValues(c.extensions ?? {}, storeAny),
  };
}

// containerd does not store a label with an empty value (that is how a label is removed)
const dropEmpty = (m: Record<string, string>) => Object.fromEntries(Object.entries(m).filter(([, v]) => v !== ''));

function validate(c: Stored): void {
  try {
    validateIdentifier(c.id);
  } catch (e) {
    throw toBerthError(e).wrap('container.ID');
  }
  if (Object.hasOwn(c.extensions, '')) throw invalidArgument('container.Extension keys must not be zero-length');
  for (const [k, v] of Object.entries(c.labels)) {
    try {
      validateLabel(k, v);
    } catch (e) {
      throw toBerthError(e).wrap('containers.Labels');
    }
  }
  if (!c.runtime.name) throw invalidArgument('container.Runtime.Name must be set');
  if (!c.spec) throw invalidArgument('container.Spec must be set');
  if (c.snapshot_key && !c.snapshotter) throw invalidArgument('container.Snapshotter must be set if container.SnapshotKey is set');
}

/** The fields containerd's filters know on a container (metadata/adaptors.go). */
function matches(f: Filter, c: Stored): boolean {
  return f.match({
    field: ([head, ...rest]) => {
      switch (head) {
        case 'id':
          return c.id || undefined;
        case 'image':
          return c.image || undefined;
        case 'runtime':
          return rest[0] === 'name' ? c.runtime.name || undefined : undefined;
        case 'labels':
          return rest.length && Object.hasOwn(c.labels, rest.join('.')) ? c.labels[rest.join('.')] : undefined;
        default:
          return undefined;
      }
    },
  });
}

function parseFilters(filters: string[]): Filter {
  try {
    return parseAll(filters);
  } catch (e) {
    // containerd's parser ends its message with the kind, and its container store adds the kind
    // again: `filters: parse error: [...]: reason: invalid argument: invalid argument`
    const err = toBerthError(e);
    const parser = err.message.endsWith(': invalid argument') ? err.message : `${err.message}: invalid argument`;
    throw new BerthError(Code.InvalidArgument, `${parser}: invalid argument`, { cause: err });
  }
}

/** The fields a full replace (no field paths) sets, as containerd has them. */
const replaceable = ['labels', 'spec', 'extensions', 'image', 'snapshotkey'];

export class Containers {
  constructor(
    private readonly db: Store,
    private readonly events: EventSink,
    private readonly now: () => Timestamp,
    /** namespaces exist while containers are written in them (see @berth/bus usage.ts) */
    private readonly guard?: NamespaceGuard,
  ) {}

  private key(ns: string, id: string): string {
    return key('container', ns, id);
  }

  // containerd words a miss differently once a namespace has had containers (its bucket exists):
  // this marker stands for that bucket, and goes with the namespace
  private marker(ns: string): string {
    return key('bucket', ns);
  }

  async get(ns: string, id: string): Promise<Container> {
    const c = await this.db.get<Stored>(this.key(ns, id));
    if (!c) throw notFound(`container "${id}" in namespace "${ns}"`);
    return toApi(c);
  }

  /** The containers that match, in id order (as containerd's bucket walk gives them). */
  async list(ns: string, filters: string[]): Promise<Container[]> {
    const f = parseFilters(filters);
    const out: Stored[] = [];
    for await (const [, c] of this.db.entries<Stored>(prefix('container', ns))) if (matches(f, c)) out.push(c);
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map(toApi);
  }

  async create(ns: string, container: Container): Promise<Container> {
    const c = fromApi(container ?? ({} as Container), { seconds: 0, nanos: 0 });
    try {
      validate(c);
    } catch (e) {
      throw toBerthError(e).wrap('create container failed validation');
    }
    c.labels = dropEmpty(c.labels);
    const k = this.key(ns, c.id);
    const write = () =>
      this.db.transact([k], async (tx) => {
        if (await tx.get(k)) throw alreadyExists(`container "${c.id}"`);
        c.created_at = c.updated_at = this.now();
        tx.put(k, c);
        tx.put(this.marker(ns), 1);
        const out = toApi(c);
        this.events.emit(tx, ns, '/containers/create', { id: out.id, image: out.image, runtime: out.runtime });
        return out;
      });
    return this.guard ? this.guard.write(ns, write) : write();
  }

  async update(ns: string, container: Container, paths: string[]): Promise<Container> {
    const id = container?.id ?? '';
    if (!id) throw new BerthError(Code.InvalidArgument, 'Container.ID required');
    const k = this.key(ns, id);
    return this.db.transact([k], async (tx) => {
      const cur = await tx.get<Stored>(k);
      if (!cur) {
        if (!(await tx.get(this.marker(ns)))) throw notFound(`cannot update container "${id}" in namespace "${ns}"`);
        throw notFound(`container "${id}"`);
      }
      const req = fromApi(container, cur.created_at);
      const next: Stored = structuredClone(cur);
      if (!paths.length) {
        // fields that cannot change must be sent unchanged on a full replace, so that they may
        // become changeable later without changing what such a request means
        if (req.snapshotter !== cur.snapshotter) throw invalidArgument('container.Snapshotter field is immutable');
        if (req.runtime.name !== cur.runtime.name) throw invalidArgument('container.Runtime.Name field is immutable');
        paths = replaceable;
      }
      for (const p of paths) {
        if (p.startsWith('labels.')) {
          const l = p.slice('labels.'.length);
          next.labels[l] = req.labels[l] ?? '';
        } else if (p.startsWith('extensions.')) {
          const x = p.slice('extensions.'.length);
          next.extensions[x] = req.extensions[x] ?? { type_url: '', value: '' };
        } else if (p === 'labels') next.labels = req.labels;
        else if (p === 'spec') next.spec = req.spec;
        else if (p === 'extensions') next.extensions = req.extensions;
        else if (p === 'image') next.image = req.image;
        else if (p === 'snapshotkey') next.snapshot_key = req.snapshot_key;
        else throw invalidArgument(`cannot update "${p}" field on "${id}"`);
      }
      try {
        validate(next);
      } catch (e) {
        throw toBerthError(e).wrap('update failed validation');
      }
      next.labels = dropEmpty(next.labels);
      next.updated_at = this.now();
      // containerd writes extensions into the existing bucket without clearing it: a replaced
      // map answers as sent, but the extensions it dropped are still there on the next read
      tx.put(k, { ...next, extensions: { ...cur.extensions, ...next.extensions } });
      const out = toApi(next);
      this.events.emit(tx, ns, '/containers/update', { id: out.id, image: out.image, labels: out.labels, snapshot_key: out.snapshot_key });
      return out;
    });
  }

  async delete(ns: string, id: string): Promise<void> {
    const k = this.key(ns, id);
    await this.db.transact([k], async (tx) => {
      if (!(await tx.get(k))) {
        if (!(await tx.get(this.marker(ns)))) throw notFound(`cannot delete container "${id}" in namespace "${ns}"`);
        throw notFound(`container ${id}`);
      }
      tx.del(k);
      this.events.emit(tx, ns, '/containers/delete', { id });
    });
  }

  hasAny(ns: string): Promise<boolean> {
    return this.db.hasPrefix(prefix('container', ns));
  }

  /** The namespace was deleted: its bucket goes with it. */
  async forget(ns: string): Promise<void> {
    await this.db.del(this.marker(ns));
  }

  /** Every namespace's containers as the collector reads them: roots, with their snapshot and labels. */
  async gcRecords(): Promise<GcRecords> {
    const containers: NonNullable<GcRecords['containers']> = [];
    const from = prefix('container');
    for await (const [k, c] of this.db.entries<Stored>(from)) {
      containers.push({ ns: unescapePart(k.slice(from.length).split('/')[0]!), id: c.id, snapshotter: c.snapshotter, snapshot_key: c.snapshot_key, labels: c.labels ?? {} });
    }
    return { containers };
  }
}
