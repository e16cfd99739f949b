// The content store as a namespace sees it: containerd's metadata/content.go over
// content/local, plus the /content/delete event (services/content/store.go). No NATS here.
//
// Blobs on disk are shared by every namespace; a namespace sees one only through its own
// record (labels and times are per namespace). Content committed in one namespace can be
// committed into another without sending the bytes again when the writer names the expected
// digest up front (containerd's default "shared" policy); otherwise the bytes must be written.
import { join } from 'node:path';
import { namespaceRequired, type EventSink, type LeaseRefs, type NamespaceGuard } from '@berth/bus';
import { nowTimestamp, type Timestamp } from '@berth/api';
import { alreadyExists, BerthError, Code, failedPrecondition, invalidArgument, notFound } from '@berth/errdefs';
import { validateLabel } from '@berth/identifiers';
import { KeyedLock } from '@berth/store';
import type { BlobStore, IngestWriter } from './blobs.js';
import { algorithmOf, digestProblem } from './digest.js';
import { contentFilter, statusFilter } from './filter.js';
import { blobKey, ingestKey, op, storedTime, type BlobRecord, type ContentStore, type IngestRecord, type Labels } from './store.js';

/** What a call carries besides its request: containerd's context (namespace and lease). */
export interface Ctx {
  namespace?: string;
  lease?: string;
}

export interface Info {
  digest: string;
  size: number;
  createdAt: Timestamp;
  updatedAt: Timestamp;
  labels: Labels;
}

export interface Status {
  ref: string;
  offset: number;
  total: number;
  startedAt: Timestamp;
  updatedAt: Timestamp;
  expected: string;
}

export interface ContentOptions {
  /**
   * containerd's content_sharing_policy: "shared" (the default) lets a writer that names an
   * expected digest adopt a blob another namespace committed; false ("isolated") makes every
   * namespace send the bytes itself.
   */
  shared?: boolean;
  /** records what a write under a lease holds (the leases service); without it leases are taken on trust */
  leases?: LeaseRefs;
  /** namespaces exist while data is written in them (see @berth/bus usage.ts); without it, no check */
  guard?: NamespaceGuard;
}

/** Ingests not held by a lease may be aborted by a collector after this long (containerd: 24 h). */
export const ingestExpiry = 24 * 3600 * 1000;

export class Content {
  readonly shared: boolean;

  constructor(
    readonly blobs: BlobStore,
    readonly store: ContentStore,
    private readonly events: EventSink,
    private readonly opts: ContentOptions = {},
  ) {
    this.shared = opts.shared ?? true;
  }

  /** The call's namespace, required and valid as containerd requires it. */
  namespace(ctx: Ctx): string {
    return namespaceRequired(ctx);
  }

  /** A write that creates data in `ns`: the namespace exists and is not being deleted meanwhile. */
  private inNamespace<T>(ns: string, fn: () => Promise<T>): Promise<T> {
    return this.opts.guard ? this.opts.guard.write(ns, fn) : fn();
  }

  async exists(ctx: Ctx, digest: string): Promise<boolean> {
    return (await this.store.blob(this.namespace(ctx), digest)) !== undefined;
  }

  async info(ctx: Ctx, digest: string): Promise<Info> {
    const r = await this.store.blob(this.namespace(ctx), digest);
    if (!r) throw notFound(`content digest ${digest}`);
    return toInfo(digest, r);
  }

  /**
   * Labels are the only mutable field. Without paths they are replaced; `labels` replaces them
   * too; `labels.<key>` sets one key, or removes it when the new value is empty.
   */
  async update(ctx: Ctx, info: { digest: string; labels?: Labels }, paths: string[]): Promise<Info> {
    const ns = this.namespace(ctx);
    const given = info.labels ?? {};
    return this.store.db.transact([blobKey(ns, info.digest)], async (tx) => {
      const r = await tx.get<BlobRecord>(blobKey(ns, info.digest));
      if (!r) throw notFound(`content digest ${info.digest}`);
      let labels: Labels = { ...r.labels };
      if (paths.length) {
        for (const p of paths) {
          if (p.startsWith('labels.')) {
            const key = p.slice('labels.'.length);
            labels[key] = given[key] ?? '';
          } else if (p === 'labels') {
            labels = { ...given };
          } else {
            throw invalidArgument(`cannot update "${p}" field on content info "${info.digest}"`);
          }
        }
      } else {
        labels = { ...given };
      }
      validateLabels(labels);
      const next: BlobRecord = { ...r, labels: dropEmpty(labels), updated: nowTimestamp() };
      tx.add(op.putBlob(ns, info.digest, next));
      return toInfo(info.digest, next);
    });
  }

  /** The namespace's content, in digest order, matching any of `filters`. */
  async *list(ctx: Ctx, filters: string[] = []): AsyncGenerator<Info> {
    const ns = this.namespace(ctx);
    const f = contentFilter(filters);
    for await (const [digest, r] of this.store.blobs(ns)) {
      const info = toInfo(digest, r);
      if (f.match(info)) yield info;
    }
  }

  /**
   * Removes the namespace's record, with its /content/delete event (and the call's lease
   * reference). The file stays on disk until the collector finds no namespace left using it, as
   * in containerd.
   */
  async delete(ctx: Ctx, digest: string): Promise<void> {
    const ns = this.namespace(ctx);
    await this.store.db.transact([blobKey(ns, digest)], async (tx) => {
      if (!(await tx.get(blobKey(ns, digest)))) throw notFound(`content digest ${digest}`);
      tx.add(op.delBlob(ns, digest));
      this.events.emit(tx, ns, '/content/delete', { digest });
    });
    if (ctx.lease) await this.opts.leases?.remove(ns, ctx.lease, { type: 'content', id: digest });
  }

  /** A committed blob the namespace can see: its size (from the record) and a ranged reader. */
  async reader(ctx: Ctx, digest: string): Promise<{ size: number; read: (offset: number, length: number, signal?: AbortSignal) => AsyncGenerator<Buffer> }> {
    const info = await this.info(ctx, digest);
    return { size: info.size, read: (offset, length, signal) => this.blobs.read(digest, offset, length, signal) };
  }

  /**
   * The fast path for readers on this node: the committed file of a blob the namespace can
   * see. The file is read-only and never changes; a reader that has it open keeps its bytes even
   * if the blob is later collected.
   */
  async blobPath(ctx: Ctx, digest: string): Promise<{ digest: string; path: string; size: number }> {
    const problem = digestProblem(digest);
    if (problem) throw invalidArgument(`${digest}: ${problem}`);
    const info = await this.info(ctx, digest);
    const path = this.blobs.blobPath(digest);
    const st = this.blobs.statNow(digest);
    if (!st) throw notFound(`blob ${digest} expected at ${path}: blob not found`);
    return { digest, path, size: info.size };
  }

  async status(ctx: Ctx, ref: string): Promise<Status> {
    const ns = this.namespace(ctx);
    const r = await this.store.ingest(ns, ref);
    if (!r) throw notFound(`reference ${ref}`);
    const st = await this.blobs.status(r.bref);
    return { ...st, ref, expected: '' };
  }

  /** The namespace's ingests that have data on disk, in ref order, matching any of `filters`. */
  async listStatuses(ctx: Ctx, filters: string[] = []): Promise<Status[]> {
    const ns = this.namespace(ctx);
    const f = statusFilter(filters);
    const out: Status[] = [];
    for await (const [ref, r] of this.store.ingests(ns)) {
      let st;
      try {
        st = await this.blobs.status(r.bref);
      } catch (err) {
        // an ingest that finishes or vanishes while we look, or one adopting another
        // namespace's blob (no data of its own), is not an active write
        if (err instanceof BerthError && err.code === Code.NotFound) continue;
        throw err;
      }
      const s = { ...st, ref, expected: '' };
      if (f.match(s)) out.push(s);
    }
    return out;
  }

  async abort(ctx: Ctx, ref: string): Promise<void> {
    const ns = this.namespace(ctx);
    const known = await this.store.ingest(ns, ref);
    if (!known) throw notFound(`reference ${ref}`);
    // under the ref's write lock: with a writer open the abort is Unavailable and changes nothing
    await this.blobs.abort(known.bref, () =>
      this.store.db.transact([ingestKey(ns, ref)], async (tx) => {
        if (!(await tx.get<IngestRecord>(ingestKey(ns, ref)))) throw notFound(`reference ${ref}`);
        tx.add(op.delIngest(ns, ref));
      }),
    );
    if (ctx.lease) await this.opts.leases?.remove(ns, ctx.lease, { type: 'ingests', id: ref });
  }

  /**
   * Opens (or resumes) the write `ref`. With an expected digest the namespace already has:
   * AlreadyExists (after recording it under the lease, so a pull holding a lease keeps it).
   * With one another namespace committed (shared policy, same size or none given): a writer
   * with nothing to write, whose commit only adds this namespace's record.
   */
  async writer(ctx: Ctx, ref: string, total: number, expected = ''): Promise<NamespacedWriter> {
    if (!ref) throw invalidArgument('ref must not be empty');
    const ns = this.namespace(ctx);
    const lease = ctx.lease;
    if (expected && (await this.store.blob(ns, expected))) {
      // The client skips what the namespace has, so under a lease the lease must hold it now. A
      // collection may have swept the record between the look and the lease's reference (that
      // write waits out its barrier), so look again once the lease holds it: still there, it
      // stays; gone, it is written like any other.
      if (!lease) throw alreadyExists(`content ${expected}`);
      await this.opts.leases?.add(ns, lease, { type: 'content', id: expected });
      if (await this.store.blob(ns, expected)) throw alreadyExists(`content ${expected}`);
    }
    // the lease's reference first: the ingest is never unreferenced (and a missing lease refuses the write)
    if (lease) await this.opts.leases?.add(ns, lease, { type: 'ingests', id: ref });
    let shared: { digest: string; size: number } | undefined;
    if (expected && this.shared) {
      const st = await this.blobs.stat(expected);
      if (st && (total === 0 || total === st.size)) shared = { digest: expected, size: st.size };
    }
    const existing = await this.store.ingest(ns, ref);
    // the blob store key: namespace and ref, in containerd's form (it shows in lock errors)
    const bref = existing?.bref ?? `${ns}/1/${ref}`;
    const backend = shared ? undefined : await this.blobs.writer(bref, total, algorithmOf(expected));
    const now = Date.now();
    const record: IngestRecord = { bref, started: existing?.started ?? nowTimestamp() };
    if (shared) {
      record.expected = shared.digest;
      record.size = shared.size;
    }
    if (!lease) record.expireAt = now + ingestExpiry;
    else if (existing?.expireAt !== undefined) record.expireAt = existing.expireAt;
    try {
      await this.inNamespace(ns, () => this.store.db.transact([ingestKey(ns, ref)], async (tx) => tx.add(op.putIngest(ns, ref, record))));
    } catch (err) {
      await backend?.close();
      throw err;
    }
    return new NamespacedWriter(this, ns, lease, ref, bref, backend, shared ?? { digest: '', size: total }, storedTime(record.started));
  }

  /**
   * The same-node fast path for writers: opens (or resumes) the ingest `ref` as `writer` does,
   * leases and all, then leaves it and answers where its data file is and how much it holds. The
   * caller appends to that file itself and commits through an ordinary Write (which rehashes the
   * data on opening, so every byte is still verified here). `shared` means the namespace can
   * take another namespace's blob: nothing to write, just commit.
   */
  async ingestFile(ctx: Ctx, ref: string, total: number, expected = ''): Promise<{ path: string; offset: number; shared: boolean }> {
    const w = await this.writer(ctx, ref, total, expected);
    const st = w.status();
    const path = w.dataPath();
    await w.release();
    return { path: path ?? '', offset: st.offset, shared: path === undefined };
  }

  /**
   * Held per digest while a commit records a blob, and by the collector while it removes a blob
   * file no namespace has (it skips one held): a record never names a file that is gone.
   */
  readonly blobLocks = new KeyedLock();

  /** @internal names the blob an ingest's commit is about to install (see IngestRecord.committing). */
  async markCommitting(ns: string, ref: string, digest: string): Promise<void> {
    await this.store.db.transact([ingestKey(ns, ref)], async (tx) => {
      const r = await tx.get<IngestRecord>(ingestKey(ns, ref));
      if (r && r.committing !== digest) tx.add(op.putIngest(ns, ref, { ...r, committing: digest }));
    });
  }

  /** @internal the metadata half of a commit: the namespace's record, the ingest gone, leases. */
  async recordCommit(ns: string, lease: string | undefined, ref: string, digest: string, size: number, labels: Labels): Promise<void> {
    return this.blobLocks.with([digest], async () => {
      // a shared writer's blob may have been collected since the writer looked (nothing named it then)
      if (!(await this.blobs.stat(digest))) throw failedPrecondition(`content ${digest}: blob was removed before the commit; write it again`);
      return this.recordCommitLocked(ns, lease, ref, digest, size, labels);
    });
  }

  private async recordCommitLocked(ns: string, lease: string | undefined, ref: string, digest: string, size: number, labels: Labels): Promise<void> {
    // the content's lease reference before the record, the ingest's after: never unreferenced
    if (lease) await this.opts.leases?.add(ns, lease, { type: 'content', id: digest });
    const existed = await this.inNamespace(ns, () =>
      this.store.db.transact([blobKey(ns, digest), ingestKey(ns, ref)], async (tx) => {
        const existing = await tx.get(blobKey(ns, digest));
        if (!existing) {
          const now = nowTimestamp();
          tx.add(op.putBlob(ns, digest, { size, created: now, updated: now, labels: dropEmpty(labels) }));
        }
        tx.add(op.delIngest(ns, ref));
        return existing !== undefined;
      }),
    );
    if (lease) await this.opts.leases?.remove(ns, lease, { type: 'ingests', id: ref });
    if (existed) throw alreadyExists(`content ${digest}`);
  }

  /** What this service still holds in a namespace, in containerd's words ("blobs"). */
  async usage(ns: string): Promise<string[]> {
    return (await this.store.hasBlobs(ns)) ? ['blobs'] : [];
  }
}

/**
 * A write as a namespace sees it. Usually a blob store writer; for a shared blob, nothing until
 * the client writes anyway (then the blob's bytes are copied into a real ingest first).
 */
export class NamespacedWriter {
  constructor(
    private readonly content: Content,
    readonly namespace: string,
    private readonly lease: string | undefined,
    readonly ref: string,
    private readonly bref: string,
    private backend: IngestWriter | undefined,
    private readonly desc: { digest: string; size: number },
    private readonly started: Timestamp,
  ) {}

  status(): Status {
    if (this.backend) return { ...this.backend.status(), ref: this.ref, expected: '' };
    return { ref: this.ref, offset: this.desc.size, total: this.desc.size, startedAt: this.started, updatedAt: this.started, expected: this.desc.digest };
  }

  /** the digest so far; after a commit, the committed one (it may use another algorithm) */
  digest(): string {
    if (this.committed) return this.committed;
    return this.backend ? this.backend.digest() : this.desc.digest;
  }

  private committed?: string;

  async write(data: Uint8Array): Promise<number> {
    if (!this.backend) {
      if (data.length === 0) return 0;
      await this.unshare(this.desc.size);
    }
    return this.backend!.write(data);
  }

  async truncate(size: number): Promise<void> {
    if (this.backend) return this.backend.truncate(size);
    await this.unshare(0, size);
  }

  /** Turns a shared writer into a real ingest holding the first `copy` bytes of the blob. */
  private async unshare(copy: number, total = this.desc.size): Promise<void> {
    const w = await this.content.blobs.writer(this.bref, total, algorithmOf(this.desc.digest));
    try {
      if (w.status().offset > 0) await w.truncate(0);
      if (copy > 0) for await (const chunk of this.content.blobs.read(this.desc.digest, 0, copy)) await w.write(chunk);
    } catch (err) {
      await w.close();
      throw err;
    }
    this.backend = w;
  }

  /**
   * Verifies and commits, then records the blob in the namespace. Committing content the
   * namespace already has removes the ingest and answers AlreadyExists.
   */
  async commit(size: number, expected: string, labels?: Labels): Promise<void> {
    try {
      validateLabels(labels ?? {});
    } catch (err) {
      await this.close();
      throw err;
    }
    let actual: string;
    if (!this.backend) {
      if (size !== 0 && size !== this.desc.size) throw failedPrecondition(`"${this.ref}" failed size validation: ${this.desc.size} != ${size}`);
      if (expected && expected !== this.desc.digest) throw failedPrecondition(`"${this.ref}" unexpected digest`);
      size = this.desc.size;
      actual = this.desc.digest;
    } else {
      const offset = this.backend.status().offset;
      if (size !== 0 && size !== offset) {
        await this.close();
        throw failedPrecondition(`"${this.ref}" failed size validation: ${offset} != ${size}`);
      }
      size = offset;
      await this.content.markCommitting(this.namespace, this.ref, expected || this.backend.digest());
      try {
        actual = await this.backend.commit(size, expected || undefined);
      } catch (err) {
        // the bytes are on disk already (another ingest committed them): still ours to record
        if (!(err instanceof BerthError && err.code === Code.AlreadyExists)) throw err;
        actual = this.backend.committed!;
      }
    }
    this.committed = actual;
    await this.content.recordCommit(this.namespace, this.lease, this.ref, actual, size, labels ?? {});
  }

  /** the ingest's data file, when there is an ingest (a shared blob has none) */
  dataPath(): string | undefined {
    return this.backend ? join(this.backend.path, 'data') : undefined;
  }

  /** Ends this session; the ingest stays, resumable. */
  async close(): Promise<void> {
    await this.backend?.close();
  }

  /** Ends a session that wrote nothing, without syncing what it did not write. */
  async release(): Promise<void> {
    await this.backend?.release();
  }
}

/** Labels in key order: containerd's store keeps them sorted and its answers list them so. */
function toInfo(digest: string, r: BlobRecord): Info {
  const labels = Object.fromEntries(Object.entries(r.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return { digest, size: r.size, createdAt: storedTime(r.created), updatedAt: storedTime(r.updated), labels };
}

function validateLabels(labels: Labels): void {
  for (const [k, v] of Object.entries(labels)) {
    try {
      validateLabel(k, v);
    } catch (err) {
      throw err instanceof BerthError ? err.wrap('info.Labels') : err;
    }
  }
}

function dropEmpty(labels: Labels): Labels {
  return Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ''));
}
