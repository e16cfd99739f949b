// The node's blob files: what containerd keeps under content/local. Namespaces, labels and
// leases are not here (see local.ts); this layer only knows digests and ingest keys.
//
//   <root>/blobs/<algorithm>/<hex>          committed blobs, read-only (0444), never changed
//   <root>/ingest/<sha256(key)>/            one folder per write in progress
//        ref        the ingest key, to check a folder belongs to the key that hashes to it
//        data       the bytes so far; its size is the resume offset
//        startedat  updatedat  total  algorithm   small files, each replaced atomically
//
// Crash safety comes from the order of operations: an ingest folder appears whole (built
// under a temporary name, then renamed); a commit fsyncs the data, renames it into blobs/
// (atomic on one filesystem) and fsyncs the folder it landed in before anyone is told it is
// committed. A crash therefore leaves either an ingest that resumes from its data's size or a
// complete blob, never a half-written blob under a digest name.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, chmod, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Hash } from 'node:crypto';
import { compareTimestamps, formatTimestamp, nowTimestamp, parseTimestamp, type Timestamp } from '@berth/api';
import { alreadyExists, BerthError, Code, failedPrecondition, invalidArgument, notFound, unavailable } from '@berth/errdefs';
import { algorithmOf, canonical, digestProblem, isAlgorithm, newHash, peekDigest, splitDigest, type Algorithm } from './digest.js';

/** Reads and copies move through buffers of this size, like containerd's 1 MiB pool. */
export const chunkSize = 1 << 20;

/**
 * Reads up to this size (manifests, configs, indexes: what every client reads several times per
 * container) are done at once on the calling thread: from the page cache that is microseconds,
 * while open, read and close through libuv's pool were three thread hops per Read.
 */
const smallRead = 64 << 10;

function readSmall(p: string, digest: string, offset: number, length: number): Buffer {
  let fd: number;
  try {
    fd = openSync(p, 'r');
  } catch (err) {
    if (isMissing(err)) throw notFound(`blob ${digest} expected at ${p}: blob not found`);
    throw err;
  }
  try {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    return got === length ? buf : buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

export interface IngestStatus {
  ref: string;
  offset: number;
  total: number;
  startedAt: Timestamp;
  updatedAt: Timestamp;
}

export interface BlobStat {
  size: number;
  modified: Date;
}

const isMissing = (err: unknown) => (err as NodeJS.ErrnoException)?.code === 'ENOENT';

export class BlobStore {
  /** ingest keys with a live writer in this process, and since when */
  private readonly locks = new Map<string, Date>();
  /** the open writers, whose last write is fresher than anything on disk */
  private readonly writers = new Map<string, IngestWriter>();

  private constructor(readonly root: string) {}

  /** Opens the store under `root`, creating it, and clears what a crash may have left half-made. */
  static async open(root: string): Promise<BlobStore> {
    const s = new BlobStore(root);
    await mkdir(join(root, 'ingest'), { recursive: true });
    await mkdir(join(root, 'blobs'), { recursive: true });
    await s.recover();
    return s;
  }

  get ingestRoot(): string {
    return join(this.root, 'ingest');
  }

  /** Where the blob `digest` lives (whether or not it is there). Throws on an invalid digest. */
  blobPath(digest: string): string {
    const problem = digestProblem(digest);
    if (problem) throw invalidArgument(`cannot calculate blob path from invalid digest: ${problem}`);
    const { algorithm, hex } = splitDigest(digest);
    return join(this.root, 'blobs', algorithm, hex);
  }

  /** The folder of an ingest: named by a hash of its key so any key makes a safe, short name. */
  ingestPath(key: string): string {
    return join(this.ingestRoot, newHash('sha256').update(key).digest('hex'));
  }

  async stat(digest: string): Promise<BlobStat | undefined> {
    if (digestProblem(digest)) return undefined;
    try {
      const st = await stat(this.blobPath(digest));
      return st.isFile() ? { size: st.size, modified: st.mtime } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  /** As stat, on the calling thread: a lookup in the kernel's cache, where a thread-pool hop cost more (every fast-path Read asks). */
  statNow(digest: string): BlobStat | undefined {
    if (digestProblem(digest)) return undefined;
    const st = statSync(this.blobPath(digest), { throwIfNoEntry: false });
    return st?.isFile() ? { size: st.size, modified: st.mtime } : undefined;
  }

  /**
   * Reads `length` bytes of a blob from `offset`, a chunk at a time: at most one chunk is in
   * this process's hands until the consumer asks for the next.
   */
  async *read(digest: string, offset: number, length: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const p = this.blobPath(digest);
    if (length <= smallRead) {
      const b = readSmall(p, digest, offset, length);
      if (b.length) yield b; // as the chunked read: nothing at all for nothing read
      return;
    }
    let fh: FileHandle;
    try {
      fh = await open(p, 'r');
    } catch (err) {
      if (isMissing(err)) throw notFound(`blob ${digest} expected at ${p}: blob not found`);
      throw err;
    }
    try {
      let pos = offset;
      const end = offset + length;
      while (pos < end) {
        signal?.throwIfAborted();
        // a fresh buffer per chunk: the consumer may keep the one it got
        const buf = Buffer.allocUnsafe(Math.min(chunkSize, end - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
        yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }

  /** An ingest's progress, read from its folder (the data file's size is the offset). */
  async status(key: string): Promise<IngestStatus> {
    const dir = this.ingestPath(key);
    const data = join(dir, 'data');
    let st;
    try {
      st = await stat(data, { bigint: true });
    } catch (err) {
      if (isMissing(err)) throw notFound(`stat ${data}: no such file or directory`);
      throw err;
    }
    let ref: string;
    try {
      ref = await readFile(join(dir, 'ref'), 'utf8');
    } catch (err) {
      if (isMissing(err)) throw notFound(`open ${join(dir, 'ref')}: no such file or directory`);
      throw err;
    }
    const startedAt = await readTime(join(dir, 'startedat'));
    let updatedAt = await readTime(join(dir, 'updatedat'));
    // updatedat is only rewritten when a writer closes; mid-write the writer's own clock is
    // fresher, and the data's mtime (coarse: the kernel's tick) is the fallback
    const mtime = { seconds: Number(st.mtimeNs / 1_000_000_000n), nanos: Number(st.mtimeNs % 1_000_000_000n) };
    if (compareTimestamps(mtime, updatedAt) > 0) updatedAt = mtime;
    const live = this.writers.get(key)?.status().updatedAt;
    if (live && compareTimestamps(live, updatedAt) > 0) updatedAt = live;
    return { ref, offset: Number(st.size), total: await readTotal(dir), startedAt, updatedAt };
  }

  /** Every ingest key with a folder here (for a future collector to match against metadata). */
  async ingestKeys(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await readdir(this.ingestRoot)) {
      try {
        out.push(await readFile(join(this.ingestRoot, name, 'ref'), 'utf8'));
      } catch {
        // vanished or half-made: not an ingest
      }
    }
    return out;
  }

  /** Every committed blob file: its digest, size and last change (for the collector). */
  async *files(): AsyncGenerator<{ digest: string; size: number; modified: Date }> {
    const top = join(this.root, 'blobs');
    for (const algorithm of await readdir(top)) {
      if (!isAlgorithm(algorithm)) continue;
      let names: string[];
      try {
        names = await readdir(join(top, algorithm));
      } catch {
        continue;
      }
      for (const hex of names) {
        const digest = `${algorithm}:${hex}`;
        if (digestProblem(digest)) continue;
        const st = await this.stat(digest);
        if (st) yield { digest, size: st.size, modified: st.modified };
      }
    }
  }

  /** Removes a committed blob file (the collector's, once no namespace has it). Readers that have it open keep their bytes. */
  async removeBlob(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }

  /**
   * Opens the writer for `key`, resuming what its folder holds. One writer per key at a time:
   * a second caller retries briefly (a writer that is just closing frees the key) and then
   * gets Unavailable, as containerd answers.
   */
  async writer(key: string, total: number, algorithm: Algorithm = canonical): Promise<IngestWriter> {
    if (!key) throw invalidArgument('ref must not be empty');
    await this.lock(key);
    try {
      const w = await this.openWriter(key, total, algorithm);
      this.writers.set(key, w);
      return w;
    } catch (err) {
      this.unlock(key);
      throw err;
    }
  }

  private async lock(key: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const since = this.locks.get(key);
      if (!since) {
        this.locks.set(key, new Date());
        return;
      }
      if (attempt >= 9) throw unavailable(`ref ${key} locked for ${goDuration(Date.now() - since.getTime())} (since ${goTime(since)})`);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * (1 << attempt))));
    }
  }

  /** @internal released by the writer when it commits or closes */
  unlock(key: string): void {
    this.locks.delete(key);
    this.writers.delete(key);
  }

  private async openWriter(key: string, total: number, algorithm: Algorithm): Promise<IngestWriter> {
    const dir = this.ingestPath(key);
    let resumed: { status: IngestStatus; algorithm: Algorithm; hash: Hash } | undefined;
    try {
      resumed = await this.resume(dir, key, total);
    } catch (err) {
      // an unusable folder (another key, another total, half-made) is started over, as
      // containerd does; a folder that does not exist is simply new
      if (!isMissing(err) && !(err instanceof BerthError && err.code === Code.NotFound)) {
        console.warn(`content: ingest ${key}: cannot resume (${(err as Error).message}); starting over`);
      }
      await rm(dir, { recursive: true, force: true });
    }
    if (!resumed) {
      const now = nowTimestamp();
      await this.createIngest(dir, key, total, algorithm, now);
      const hash = newHash(algorithm);
      resumed = { status: { ref: key, offset: 0, total, startedAt: now, updatedAt: now }, algorithm, hash };
    }
    const fh = await open(join(dir, 'data'), 'r+');
    return new IngestWriter(this, key, dir, fh, resumed.algorithm, resumed.hash, resumed.status);
  }

  /** Rebuilds a writer's state from its folder: the hash of the data so far is recomputed. */
  private async resume(dir: string, key: string, total: number) {
    const status = await this.status(key);
    if (status.ref !== key) throw new Error(`ref key does not match: ${key} != ${status.ref}`);
    if (total > 0 && status.total > 0 && total !== status.total) throw new Error(`provided total differs from status: ${total} != ${status.total}`);
    const algorithm = await readAlgorithm(dir);
    const hash = newHash(algorithm);
    status.offset = await hashFile(join(dir, 'data'), hash);
    if (total > 0 && status.total === 0) {
      // a total learnt now is kept, so Status can report it after this writer is gone
      await writeSmallFile(join(dir, 'total'), String(total));
      status.total = total;
    }
    return { status, algorithm, hash };
  }

  /**
   * A new ingest folder appears complete or not at all: built aside, then renamed in place.
   * Nothing here is fsynced: a process crash loses nothing (the page cache survives it), and
   * after a power loss a folder with torn files fails to resume and is started over, which
   * loses only an unfinished write. Syncing six small files per ingest made small blobs slow.
   */
  private async createIngest(dir: string, key: string, total: number, algorithm: Algorithm, now: Timestamp): Promise<void> {
    const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
    await mkdir(tmp);
    try {
      const files: [string, string][] = [
        ['ref', key],
        ['startedat', formatTimestamp(now)],
        ['updatedat', formatTimestamp(now)],
        ['data', ''],
      ];
      if (total > 0) files.push(['total', String(total)]);
      if (algorithm !== canonical) files.push(['algorithm', algorithm]);
      await Promise.all(files.map(([name, content]) => writeFile(join(tmp, name), content)));
      await rename(tmp, dir);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Removes an ingest and its data, after `first` (the metadata's part) succeeded. Removing one
   * that is not there is not an error.
   */
  async abort(key: string, first?: () => Promise<unknown>): Promise<void> {
    // an open writer of the key goes first (or the abort gets Unavailable, as a second writer
    // does): removing the folder under it fails its files with internal errors
    await this.lock(key);
    try {
      await first?.();
      await rm(this.ingestPath(key), { recursive: true, force: true });
    } finally {
      this.unlock(key);
    }
  }

  /** @internal moves a finished ingest's data into blobs/, durably. */
  async install(dir: string, digest: string): Promise<void> {
    const target = this.blobPath(digest);
    await mkdir(dirname(target), { recursive: true });
    if (await exists(target)) {
      // someone committed the same bytes first: ours are not needed
      await rm(dir, { recursive: true, force: true });
      throw alreadyExists(`content ${digest}`);
    }
    await rename(join(dir, 'data'), target);
    await syncDir(dirname(target));
    const now = new Date();
    await utimes(target, now, now).catch(() => undefined);
    // read-only from here on: the fast path hands this file to other processes
    await chmod(target, 0o444).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }

  /**
   * After a crash: temporary files and folders are dropped, and an ingest folder whose data is
   * gone (its commit had renamed the data away before the crash) is removed.
   */
  private async recover(): Promise<void> {
    for (const name of await readdir(this.ingestRoot)) {
      const p = join(this.ingestRoot, name);
      if (name.includes('.tmp-')) {
        await rm(p, { recursive: true, force: true });
        continue;
      }
      if (!(await exists(join(p, 'data'))) || !(await exists(join(p, 'ref')))) {
        await rm(p, { recursive: true, force: true });
        continue;
      }
      for (const f of await readdir(p)) if (f.endsWith('.tmp')) await rm(join(p, f), { force: true });
    }
  }
}

/** One write in progress: appends to the ingest's data file and hashes as it goes. */
export class IngestWriter {
  private fh?: FileHandle;
  private offset: number;
  private total: number;
  private readonly startedAt: Timestamp;
  private updatedAt: Timestamp;
  /** the digest a commit verified, also when it then found the blob already there */
  committed?: string;
  /** set when a write failed: the hash no longer matches the file */
  private broken?: BerthError;

  constructor(
    private readonly store: BlobStore,
    readonly ref: string,
    readonly path: string,
    fh: FileHandle,
    readonly algorithm: Algorithm,
    private hash: Hash,
    status: IngestStatus,
  ) {
    this.fh = fh;
    this.offset = status.offset;
    this.total = status.total;
    this.startedAt = status.startedAt;
    this.updatedAt = status.updatedAt;
  }

  get isOpen(): boolean {
    return this.fh !== undefined;
  }

  status(): IngestStatus {
    return { ref: this.ref, offset: this.offset, total: this.total, startedAt: this.startedAt, updatedAt: this.updatedAt };
  }

  /** The digest of the bytes written so far. */
  digest(): string {
    return peekDigest(this.algorithm, this.hash);
  }

  private handle(): FileHandle {
    if (!this.fh) throw failedPrecondition('writer is closed');
    return this.fh;
  }

  /**
   * Appends `data` at the current offset; returns how many bytes were written. The bytes are
   * hashed here while the thread pool writes them (the two took turns: about a third of a MiB's
   * time in this process). A failed or short write leaves the hash ahead of the file, so this
   * writer takes nothing more but a restart from zero; the ingest on disk resumes from its data.
   */
  async write(data: Uint8Array): Promise<number> {
    const fh = this.handle();
    if (this.broken) throw this.broken;
    const writing = writeAll(fh, data, this.offset);
    this.hash.update(data);
    let done: number;
    try {
      done = await writing;
    } catch (err) {
      this.broken = failedPrecondition(`ingest ${this.ref}: an earlier write failed: ${(err as Error).message}`);
      throw err;
    }
    if (done < data.length) this.broken = failedPrecondition(`ingest ${this.ref}: an earlier write was short`);
    this.offset += done;
    this.updatedAt = nowTimestamp();
    return done;
  }

  /** Starts the data over (only to zero, as containerd allows). */
  async truncate(size: number): Promise<void> {
    if (size !== 0) throw new Error('Truncate: unsupported size');
    await this.handle().truncate(0);
    this.offset = 0;
    this.hash = newHash(this.algorithm);
    this.broken = undefined;
  }

  /**
   * Verifies size and digest and moves the data into blobs/. The writer is finished either
   * way (its key unlocked); on a mismatch the ingest stays, to be resumed or aborted.
   * Returns the committed digest; throws AlreadyExists (ingest removed) when the blob was
   * already there.
   */
  async commit(size: number, expected?: string): Promise<string> {
    const fh = this.fh;
    this.fh = undefined;
    try {
      if (!fh) throw failedPrecondition('cannot commit on closed writer');
      if (this.broken) {
        await fh.close();
        throw this.broken;
      }
      let actualSize: number;
      try {
        await fh.sync();
        actualSize = (await fh.stat()).size;
      } finally {
        await fh.close();
      }
      if (size > 0 && size !== actualSize) throw failedPrecondition(`unexpected commit size ${actualSize}, expected ${size}`);
      let digest = this.digest();
      // the client may name another algorithm only at commit: hash the data again with it
      const wanted = algorithmOf(expected);
      if (expected && wanted !== this.algorithm) {
        const h = newHash(wanted);
        await hashFile(join(this.path, 'data'), h);
        digest = peekDigest(wanted, h);
      }
      if (expected && expected !== digest) throw failedPrecondition(`unexpected commit digest ${digest}, expected ${expected}`);
      this.committed = digest;
      await this.store.install(this.path, digest);
      return digest;
    } finally {
      this.store.unlock(this.ref);
    }
  }

  /**
   * Frees the key of a writer that wrote nothing (IngestFile's, which only tells where the data
   * is): the ingest stays as durable as it was found. Closing with a sync made each layer of a
   * pull wait for two journal commits at its start (the data's and `updatedat`'s).
   */
  async release(): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    this.fh = undefined;
    try {
      await fh.close();
    } finally {
      this.store.unlock(this.ref);
    }
  }

  /** Leaves the ingest as it is, durable and resumable, and frees the key. */
  async close(): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    this.fh = undefined;
    try {
      await fh.sync().catch(() => undefined);
      await fh.close();
      await writeSmallFile(join(this.path, 'updatedat'), formatTimestamp(this.updatedAt)).catch(() => undefined);
    } finally {
      this.store.unlock(this.ref);
    }
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
}

/** Writes all of `data` at `position` unless the file takes no more; returns how much it took. */
async function writeAll(fh: FileHandle, data: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    if (bytesWritten === 0) break;
    done += bytesWritten;
  }
  return done;
}

/** Feeds a file to a hash a chunk at a time; returns its length. */
export async function hashFile(path: string, hash: Hash): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(chunkSize);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return pos;
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/** Writes a small file so that readers see the old or the new content, never a torn one. */
async function writeSmallFile(path: string, content: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A time file: RFC 3339 with nanoseconds (older ingests wrote milliseconds, also read). */
async function readTime(p: string): Promise<Timestamp> {
  let text: string;
  try {
    text = (await readFile(p, 'utf8')).trim();
  } catch (err) {
    if (isMissing(err)) throw notFound(`open ${p}: no such file or directory`);
    throw err;
  }
  const ts = parseTimestamp(text);
  if (!ts) throw new Error(`could not parse timestamp file ${p}`);
  return ts;
}

async function readTotal(dir: string): Promise<number> {
  try {
    const n = Number((await readFile(join(dir, 'total'), 'utf8')).trim());
    return Number.isSafeInteger(n) && n > 0 ? n : 0;
  } catch {
    return 0;
  }
}

async function readAlgorithm(dir: string): Promise<Algorithm> {
  try {
    const a = (await readFile(join(dir, 'algorithm'), 'utf8')).trim();
    if (isAlgorithm(a)) return a;
    throw new Error(`unknown algorithm ${a}`);
  } catch (err) {
    if (isMissing(err)) return canonical;
    throw err;
  }
}

/** A duration as Go prints one (`1.5s`, `12.25ms`), so lock messages read like containerd's. */
export function goDuration(ms: number): string {
  if (ms <= 0) return '0s';
  if (ms < 1e-3) return `${Math.round(ms * 1e6)}ns`;
  if (ms < 1) return `${trim(ms * 1e3)}µs`;
  if (ms < 1000) return `${trim(ms)}ms`;
  let s = ms / 1000;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${trim(s)}s`;
}

function trim(n: number): string {
  return String(Number(n.toFixed(6)));
}

/** A time as Go's default format prints it, in UTC. */
export function goTime(d: Date): string {
  const iso = d.toISOString(); // 2024-01-02T03:04:05.678Z
  const frac = iso.slice(20, 23).replace(/0+$/, '');
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${frac ? '.' + frac : ''} +0000 UTC`;
}
