// Content metadata in RocksDB, per namespace, as containerd keeps it in its bolt database
// (metadata/content.go): a namespace sees a blob only once it has a record here, whatever the
// blob files on disk; labels and times belong to the record, so two namespaces sharing one blob
// each have their own.
//
//   blob/<ns>/<digest>                        → BlobRecord
//   ingest/<ns>/<ref>                         → IngestRecord
//
// Every part of a key is escaped (@berth/store's key()). Which content a lease holds is the
// leases service's record (see @berth/bus leases.ts), not this one.
import { toTimestamp, type Timestamp } from '@berth/api';
import { key, prefix, unescapePart, type BatchOp, type Store } from '@berth/store';

export type Labels = Record<string, string>;

export interface BlobRecord {
  size: number;
  /** with nanoseconds; a number is ms since the epoch (records written before nanoseconds) */
  created: Timestamp | number;
  updated: Timestamp | number;
  labels: Labels;
}

export interface IngestRecord {
  /** the ingest's key in the blob store (ingest/ folder), unique to namespace and ref */
  bref: string;
  /** set when the ingest resolved to a blob committed in another namespace (nothing on disk) */
  expected?: string;
  /** that shared blob's size */
  size?: number;
  /**
   * the digest a commit of this ingest is installing in blobs/, set before the file moves: the
   * collector leaves a file an ingest names alone, and the record that makes the blob the
   * namespace's removes this ingest in the same batch (so no file is unnamed in between)
   */
  committing?: string;
  /** when this record was made (a shared ingest has no folder to keep it) */
  started: Timestamp | number;
  /** without a lease, when a collector may abort it (containerd: a day) */
  expireAt?: number;
}

/** A record's time as a timestamp, whichever way it was stored. */
export const storedTime = (t: Timestamp | number): Timestamp => (typeof t === 'number' ? toTimestamp(t) : t);

export const blobKey = (ns: string, digest: string) => key('blob', ns, digest);
export const ingestKey = (ns: string, ref: string) => key('ingest', ns, ref);
/** Where every namespace's blob records, and ingest records, begin. */
export const blobPrefix = prefix('blob');
export const ingestPrefix = prefix('ingest');

export class ContentStore {
  constructor(readonly db: Store) {}

  blob(ns: string, digest: string): Promise<BlobRecord | undefined> {
    return this.db.get<BlobRecord>(blobKey(ns, digest));
  }

  async *blobs(ns: string): AsyncGenerator<[string, BlobRecord]> {
    const p = prefix('blob', ns);
    for await (const [k, v] of this.db.entries<BlobRecord>(p)) yield [unescapePart(k.slice(p.length)), v];
  }

  hasBlobs(ns: string): Promise<boolean> {
    return this.db.hasPrefix(prefix('blob', ns));
  }

  ingest(ns: string, ref: string): Promise<IngestRecord | undefined> {
    return this.db.get<IngestRecord>(ingestKey(ns, ref));
  }

  async *ingests(ns: string): AsyncGenerator<[string, IngestRecord]> {
    const p = prefix('ingest', ns);
    for await (const [k, v] of this.db.entries<IngestRecord>(p)) yield [unescapePart(k.slice(p.length)), v];
  }

  batch(ops: BatchOp[]): Promise<void> {
    return ops.length ? this.db.batch(ops) : Promise.resolve();
  }
}

/** Batch operations, named for what they mean. */
export const op = {
  putBlob: (ns: string, digest: string, r: BlobRecord): BatchOp => ({ type: 'put', key: blobKey(ns, digest), value: r }),
  delBlob: (ns: string, digest: string): BatchOp => ({ type: 'del', key: blobKey(ns, digest) }),
  putIngest: (ns: string, ref: string, r: IngestRecord): BatchOp => ({ type: 'put', key: ingestKey(ns, ref), value: r }),
  delIngest: (ns: string, ref: string): BatchOp => ({ type: 'del', key: ingestKey(ns, ref) }),
};
