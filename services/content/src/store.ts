// Content metadata in RocksDB, per namespace, as containerd keeps it in its bolt database
// (metadata/content.go): a namespace sees a blob only once it has a record here, whatever the
// blob files on disk; labels and times belong to the record, so two namespaces sharing one blob
// each have their own.
//
//   blob/<ns>/<digest>                        → BlobRecord
//   ingest/<ns>/<ref>                         → IngestRecord
//   lease/<ns>/<lease>/content/<digest>       → 1   content a lease keeps alive
//   lease/<ns>/<lease>/ingests/<ref>          → 1   ingests a lease keeps alive
//
// Namespaces are identifiers (no `/`), digests have no `/`, and a ref, which may hold anything,
// is always the last part of its key. A lease id arrives in a header unchecked, so it is escaped.
import type { BatchOp, Store } from '@berth/store';

export type Labels = Record<string, string>;

export interface BlobRecord {
  size: number;
  /** ms since the epoch */
  created: number;
  updated: number;
  labels: Labels;
}

export interface IngestRecord {
  /** the ingest's key in the blob store (ingest/ folder), unique to namespace and ref */
  bref: string;
  /** set when the ingest resolved to a blob committed in another namespace (nothing on disk) */
  expected?: string;
  /** that shared blob's size */
  size?: number;
  /** when this record was made (a shared ingest has no folder to keep it) */
  started: number;
  /** without a lease, when a collector may abort it (containerd: a day) */
  expireAt?: number;
}

export type LeaseResourceType = 'content' | 'ingests';

const blobKey = (ns: string, digest: string) => `blob/${ns}/${digest}`;
const ingestKey = (ns: string, ref: string) => `ingest/${ns}/${ref}`;
const leasePrefix = (ns: string, lease: string) => `lease/${ns}/${encodeURIComponent(lease)}/`;
const leaseKey = (ns: string, lease: string, type: LeaseResourceType, id: string) => `${leasePrefix(ns, lease)}${type}/${id}`;

export class ContentStore {
  constructor(readonly db: Store) {}

  blob(ns: string, digest: string): Promise<BlobRecord | undefined> {
    return this.db.get<BlobRecord>(blobKey(ns, digest));
  }

  async *blobs(ns: string): AsyncGenerator<[string, BlobRecord]> {
    const prefix = `blob/${ns}/`;
    for await (const [k, v] of this.db.entries<BlobRecord>(prefix)) yield [k.slice(prefix.length), v];
  }

  hasBlobs(ns: string): Promise<boolean> {
    return this.db.hasPrefix(`blob/${ns}/`);
  }

  ingest(ns: string, ref: string): Promise<IngestRecord | undefined> {
    return this.db.get<IngestRecord>(ingestKey(ns, ref));
  }

  async *ingests(ns: string): AsyncGenerator<[string, IngestRecord]> {
    const prefix = `ingest/${ns}/`;
    for await (const [k, v] of this.db.entries<IngestRecord>(prefix)) yield [k.slice(prefix.length), v];
  }

  batch(ops: BatchOp[]): Promise<void> {
    return ops.length ? this.db.batch(ops) : Promise.resolve();
  }

  async leaseResources(ns: string, lease: string): Promise<{ id: string; type: LeaseResourceType }[]> {
    const prefix = leasePrefix(ns, lease);
    const out: { id: string; type: LeaseResourceType }[] = [];
    for await (const [k] of this.db.entries(prefix)) {
      const rest = k.slice(prefix.length);
      const i = rest.indexOf('/');
      out.push({ type: rest.slice(0, i) as LeaseResourceType, id: rest.slice(i + 1) });
    }
    return out;
  }
}

/** Batch operations, named for what they mean. */
export const op = {
  putBlob: (ns: string, digest: string, r: BlobRecord): BatchOp => ({ type: 'put', key: blobKey(ns, digest), value: r }),
  delBlob: (ns: string, digest: string): BatchOp => ({ type: 'del', key: blobKey(ns, digest) }),
  putIngest: (ns: string, ref: string, r: IngestRecord): BatchOp => ({ type: 'put', key: ingestKey(ns, ref), value: r }),
  delIngest: (ns: string, ref: string): BatchOp => ({ type: 'del', key: ingestKey(ns, ref) }),
  lease: (ns: string, lease: string, type: LeaseResourceType, id: string): BatchOp => ({ type: 'put', key: leaseKey(ns, lease, type, id), value: 1 }),
  unlease: (ns: string, lease: string, type: LeaseResourceType, id: string): BatchOp => ({ type: 'del', key: leaseKey(ns, lease, type, id) }),
};
