// The content service's part in garbage collection (@berth/bus gc.ts): its records for the mark,
// and the sweep of what the collector found unreferenced in an epoch: namespace records (with
// /content/delete, as a Delete has), expired ingests, then the blob files no namespace has any
// more (containerd's content store cleanup after its metadata sweep).
import type { EventSink, GcRecords, GcSweep, GcSwept, Live } from '@berth/bus';
import { BerthError } from '@berth/errdefs';
import { unescapePart, type BatchOp } from '@berth/store';
import type { Content } from './local.js';
import { blobKey, blobPrefix, ingestKey, ingestPrefix, op, type BlobRecord, type IngestRecord } from './store.js';

/**
 * How young a blob file no namespace has may be and still stay. None: a commit names the file on
 * its ingest before it moves it in place (IngestRecord.committing), so a file is unnamed only
 * once nothing will record it, and a collection frees it at once, as containerd's does (a
 * `ctr images rm --sync` returns with the space free).
 */
export const fileGrace = 0;

const nsOf = (k: string, from: string) => unescapePart(k.slice(from.length).split('/')[0]!);

export class ContentCollector {
  /**
   * Writes of blob or ingest records counted (`changed`), and the count a complete file sweep
   * started at (`tidyAt`): a blob file can lose its last name only through such a write (a
   * delete, an abort, a commit that failed after moving its file), or in a crash, hence the
   * start at 1. While no such write happened since, a collection need not list the files.
   */
  private changed = 1;
  private tidyAt = 0;

  constructor(private readonly content: Content, private readonly events: EventSink, private readonly grace = fileGrace) {}

  /** Told of every committed write to the content store but the sweep's own (the barrier's `written`). */
  noteWrites(ops: readonly BatchOp[]): void {
    if (ops.some((o) => o.key.startsWith(blobPrefix) || o.key.startsWith(ingestPrefix))) this.changed++;
  }

  /** Whether some blob file may have no record naming it: the collector then asks for a sweep. */
  untidy(): boolean {
    return this.changed > this.tidyAt;
  }

  private get db() {
    return this.content.store.db;
  }

  /** Every namespace's content records and ingests. */
  async references(): Promise<GcRecords> {
    const content: NonNullable<GcRecords['content']> = [];
    const ingests: NonNullable<GcRecords['ingests']> = [];
    for await (const [k, r] of this.db.entries<BlobRecord>(blobPrefix)) {
      content.push({ ns: nsOf(k, blobPrefix), digest: unescapePart(k.slice(blobPrefix.length).split('/')[1] ?? ''), size: r.size, labels: r.labels ?? {} });
    }
    for await (const [k, r] of this.db.entries<IngestRecord>(ingestPrefix)) {
      ingests.push({
        ns: nsOf(k, ingestPrefix),
        ref: unescapePart(k.slice(ingestPrefix.length).split('/')[1] ?? ''),
        ...(r.expireAt !== undefined ? { expires: r.expireAt } : {}),
        ...(r.expected ? { expected: r.expected } : {}),
      });
    }
    return { content, ingests };
  }

  async sweep(req: GcSweep, live: Live): Promise<GcSwept> {
    const removed = { content: 0, ingests: 0, blobs: 0 };
    let bytes = 0;
    // the sweep's own removals pass the barrier unseen by noteWrites: counted here, so files they
    // leave without a name are looked at even when this sweep stops before its file sweep
    if (req.content?.length || req.ingests?.length) this.changed++;
    for (const { ns, digest } of req.content ?? []) {
      if (!live()) break;
      const gone = await this.db.transact([blobKey(ns, digest)], async (tx) => {
        if (!(await tx.get(blobKey(ns, digest)))) return false;
        tx.add(op.delBlob(ns, digest));
        this.events.emit(tx, ns, '/content/delete', { digest });
        return true;
      });
      if (gone) removed.content++;
    }
    for (const { ns, ref } of req.ingests ?? []) {
      if (!live()) break;
      const r = await this.content.store.ingest(ns, ref);
      if (!r) continue;
      const size = await this.content.blobs.status(r.bref).then(
        (s) => s.offset,
        () => 0,
      );
      try {
        // under the ref's write lock, as Abort: an ingest with a writer open is in use, and stays
        await this.content.blobs.abort(r.bref, () =>
          this.db.transact([ingestKey(ns, ref)], async (tx) => {
            if (await tx.get(ingestKey(ns, ref))) tx.add(op.delIngest(ns, ref));
          }),
        );
        removed.ingests++;
        bytes += size;
      } catch (e) {
        if (!(e instanceof BerthError)) throw e;
      }
    }
    if (live()) {
      const f = await this.sweepFiles(live);
      removed.blobs = f.removed;
      bytes += f.bytes;
    }
    return { removed, bytes };
  }

  /** The digests some namespace has a record of, or an ingest will commit without writing (a shared blob). */
  private async named(): Promise<Set<string>> {
    const out = new Set<string>();
    for await (const [k] of this.db.entries(blobPrefix)) out.add(unescapePart(k.slice(blobPrefix.length).split('/')[1] ?? ''));
    for await (const [, r] of this.db.entries<IngestRecord>(ingestPrefix)) {
      if (r.expected) out.add(r.expected);
      if (r.committing) out.add(r.committing);
    }
    return out;
  }

  /**
   * Removes blob files no namespace has. Each candidate's lock is taken (one a commit holds is
   * skipped: it is being recorded), the records are read again under the locks, and only then
   * is a file still unnamed removed.
   */
  async sweepFiles(live: Live = () => true): Promise<{ removed: number; bytes: number }> {
    const seen = this.changed;
    const named = await this.named();
    const young = Date.now() - this.grace;
    const candidates: { digest: string; size: number }[] = [];
    let left = false; // a file this sweep did not decide on: the files stay untidy
    for await (const f of this.content.blobs.files()) {
      if (named.has(f.digest)) continue;
      if (f.modified.getTime() < young) candidates.push(f);
      else left = true;
    }
    const tidy = () => {
      if (!left) this.tidyAt = Math.max(this.tidyAt, seen);
    };
    if (!candidates.length) {
      tidy();
      return { removed: 0, bytes: 0 };
    }
    const locks = this.content.blobLocks;
    const held = candidates.filter((c) => !locks.held(c.digest));
    if (held.length < candidates.length) left = true;
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    // KeyedLock.with takes the keys before its first await: nobody gets between the check and the take
    const taken = new Promise<void>((r) => void locks.with(held.map((c) => c.digest), () => (r(), done)));
    await taken;
    let removed = 0;
    let bytes = 0;
    try {
      const again = await this.named();
      for (const c of held) {
        if (!live()) {
          left = true;
          break;
        }
        if (again.has(c.digest)) continue;
        await this.content.blobs.removeBlob(c.digest);
        removed++;
        bytes += c.size;
      }
      tidy();
    } finally {
      release();
    }
    return { removed, bytes };
  }
}
