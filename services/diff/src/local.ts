// The diff service's logic, without NATS: Apply (a layer blob onto mounts) as containerd's
// fsApplier with the walking differ's behaviour.
import { createHash, type Hash } from 'node:crypto';
import { BerthError, Code, failedPrecondition, invalidArgument, isCode } from '@berth/errdefs';
import type { MountSpec } from '@berth/native';
import { readBlobFile } from './blobreader.js';
import { openSync, readSync, closeSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { applyLayer, LowersPending, type ApplyOptions } from './apply.js';
import { decompress, detect, diffCompression, noProcessor } from './decompress.js';
import { overlayPaths, readonlyMounts, withTempMount } from './mounts.js';
import { writeDiff } from './changes.js';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { TarReader } from './tar.js';

export interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export const mediaTypeLayer = 'application/vnd.oci.image.layer.v1.tar';
export const mediaTypeLayerGzip = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const uncompressedLabel = 'containerd.io/uncompressed';

/** Where Diff writes its layer: the content store (over the bus in the service). */
export interface ContentSink {
  /**
   * Writes `data` under `ref` (from the start, whatever an earlier writer left) and commits it
   * with what `finish` says once the data is through. A blob the store already has is no error.
   */
  write(ref: string, data: AsyncIterable<Buffer>, finish: () => { digest: string; size: number; labels: Record<string, string> }): Promise<void>;
  labels(digest: string): Promise<{ size: number; labels: Record<string, string> }>;
  setLabel(digest: string, key: string, value: string): Promise<void>;
  abort(ref: string): Promise<void>;
}

export interface DiffOptions {
  media_type?: string;
  ref?: string;
  labels?: Record<string, string>;
}

/** containerd's uniqueRef: nanoseconds and 3 random bytes, URL-safe base64. */
function uniqueRef(): string {
  const ns = BigInt(Date.now()) * 1_000_000n + process.hrtime.bigint() % 1_000_000n;
  return `${ns}-${randomBytes(3).toString('base64url')}`;
}

/**
 * Where a blob's bytes come from: its file on this node (`path`), or the content service's Read
 * stream.
 */
export type BlobOpener = (digest: string) => Promise<{ stream: Readable; path?: string }>;

/** Counts and hashes what passes. */
async function* tap(src: AsyncIterable<Buffer>, hash: Hash, count: { n: number }): AsyncGenerator<Buffer> {
  for await (const c of src) {
    hash.update(c);
    count.n += c.length;
    yield c;
  }
}

function readHead(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    return b.subarray(0, readSync(fd, b, 0, 4, 0));
  } finally {
    closeSync(fd);
  }
}

function algorithm(digest: string): string {
  const alg = digest.slice(0, digest.indexOf(':'));
  if (alg !== 'sha256' && alg !== 'sha512' && alg !== 'sha384') throw invalidArgument(`unsupported digest algorithm: ${alg}`);
  return alg;
}

/**
 * A single read-write bind mount (a snapshot without parent) shows its source folder as it is:
 * writing there directly is what writing through a temporary bind mount would do, without the
 * mount and the unmount (about 0.1 s a layer here).
 */
function writableBind(mounts: readonly MountSpec[]): boolean {
  if (mounts.length !== 1 || mounts[0].type !== 'bind') return false;
  return !mounts[0].options.some((o) => o === 'ro' || o === 'remount');
}

/** The ApplyRequest payload by which a pull says the overlay's lowerdirs are still being applied. */
export const lowersPendingPayload = 'berth.io/lowers-pending';

/**
 * The ApplyRequest payload by which a pull on this node names the ingest file its download is
 * still writing (the value: an IngestSource as JSON): the layer is applied while the bytes come.
 */
export const ingestFilePayload = 'berth.io/ingest-file';

/** The value of the ingest-file payload (JSON): the file, and the layer's diff id when known. */
export interface IngestSource {
  path: string;
  diffId?: string;
}

/** Removes everything inside `dir` (not following symlinks), keeping `dir` itself. */
async function emptyFolder(dir: string): Promise<void> {
  for (const n of await readdir(dir)) await rm(join(dir, n), { recursive: true, force: true });
}

export class Differ {
  constructor(
    private readonly warn: (msg: string) => void = () => {},
  ) {}

  /**
   * Applies the layer `desc` onto `mounts` and returns the uncompressed layer's descriptor. The
   * blob streams through decompression and the tar reader; its digest is checked against `desc`
   * once read to the end. With `lowersPending` (an overlay whose lowerdirs are still being
   * applied) a layer that would read them fails with Aborted, and nothing else changes.
   */
  async apply(open: BlobOpener, desc: Descriptor, mounts: readonly MountSpec[], signal?: AbortSignal, lowersPending = false, ingest?: IngestSource): Promise<Descriptor> {
    if (!desc?.digest) throw invalidArgument('descriptor digest is required');
    const alg = algorithm(desc.digest);
    if (ingest !== undefined) return this.applyGrowing(ingest, alg, desc, mounts, signal, lowersPending);
    const blob = await open(desc.digest).catch((e: unknown) => {
      throw e instanceof BerthError ? e.wrap('failed to get reader from content store') : e;
    });
    const raw = blob.stream;
    if (diffCompression(desc.media_type) === null) {
      raw.destroy();
      throw noProcessor(desc.media_type);
    }

    // A local file is read, hashed and inflated on a thread beside this one (gzip or plain); a
    // stream, or zstd, here.
    let tarStream: AsyncIterable<Buffer>;
    let digests: () => Promise<{ blob: string; blobBytes: number; tar: string; tarBytes: number }>;
    const compression = diffCompression(desc.media_type);
    const head = blob.path && compression !== '' ? detect(await readHead(blob.path)) : 'none';
    if (blob.path && head !== 'zstd') {
      raw.destroy();
      const r = readBlobFile(blob.path, alg, compression !== '', { signal });
      tarStream = r.tar;
      digests = r.done;
    } else {
      const blobHash = createHash(alg);
      const tarHash = createHash('sha256');
      let blobBytes = 0;
      const tarCount = { n: 0 };
      let decompressed: AsyncIterable<Buffer>;
      try {
        decompressed = await decompress(raw, desc.media_type, (c) => {
          blobHash.update(c);
          blobBytes += c.length;
        });
      } catch (e) {
        raw.destroy();
        throw e;
      }
      tarStream = tap(decompressed, tarHash, tarCount);
      digests = async () => ({ blob: `${alg}:${blobHash.digest('hex')}`, blobBytes, tar: `sha256:${tarHash.digest('hex')}`, tarBytes: tarCount.n });
    }
    const tar = new TarReader(tarStream);
    const run = async (root: string, opts: ApplyOptions) => {
      await applyLayer(root, tar, { ...opts, signal, warn: this.warn });
      await tar.drain(); // trailing bytes are part of the layer's digest
    };

    const ov = mounts.length === 1 && mounts[0].type === 'overlay' ? overlayPaths(mounts[0].options) : null;
    try {
      if (ov) await run(ov.upper, { overlay: true, parents: ov.lowers, lowersPending });
      else if (mounts.length === 0) throw invalidArgument('no mounts to apply the layer to');
      else if (writableBind(mounts)) await run(mounts[0].source, {});
      else await withTempMount(mounts, (root) => run(root, {}));
    } catch (e) {
      if (e instanceof LowersPending && ov) {
        // the upperdir back as it was made (empty), so the layer can be applied to it again
        // once its parents are in; nothing of this attempt stays
        await emptyFolder(ov.upper);
        throw new BerthError(Code.Aborted, e.message);
      }
      throw e;
    } finally {
      // a failed apply stops the reading (and the reading thread's job) where it is
      await (tarStream as AsyncGenerator<Buffer>).return?.(undefined);
    }

    const d = await digests();
    if (d.blob !== desc.digest) {
      throw failedPrecondition(`content ${desc.digest} does not match its descriptor: read ${d.blobBytes} bytes with digest ${d.blob}`);
    }
    return { media_type: mediaTypeLayer, digest: d.tar, size: d.tarBytes };
  }

  /**
   * Apply from an ingest file a download on this node is still writing (the `ingestFile`
   * payload): the layer is unpacked while its bytes arrive, read up to the descriptor's size and
   * hashed on the way. Whatever goes wrong (bytes that are not the blob, a download that started
   * over, a blob that is not gzip or plain tar, a layer that needs its pending lowers) empties
   * the folder back to how the snapshot was made and answers Aborted: the caller applies the
   * committed blob the ordinary way instead, which gives the ordinary answer. Only to an overlay
   * upperdir or a writable bind (a snapshot's own folder, which can be emptied).
   */
  private async applyGrowing({ path, diffId }: IngestSource, alg: string, desc: Descriptor, mounts: readonly MountSpec[], signal: AbortSignal | undefined, lowersPending: boolean): Promise<Descriptor> {
    const compression = diffCompression(desc.media_type);
    if (compression === null) throw noProcessor(desc.media_type);
    const ov = mounts.length === 1 && mounts[0].type === 'overlay' ? overlayPaths(mounts[0].options) : null;
    const root = ov ? ov.upper : writableBind(mounts) ? mounts[0].source : null;
    if (!root) throw new BerthError(Code.Aborted, 'a growing ingest is applied only to an overlay upperdir or a writable bind');
    if (typeof path !== 'string' || !isAbsolute(path)) throw new BerthError(Code.Aborted, 'no ingest file to apply from');
    // with the layer's diff id, the tar stream's digest is what proves the bytes (the blob's is
    // checked by the content store when the download commits it, before the layer is used)
    const r = readBlobFile(path, diffId ? '' : alg, compression !== '', { follow: desc.size, signal });
    const tar = new TarReader(r.tar);
    let d;
    try {
      await applyLayer(root, tar, { overlay: !!ov, parents: ov?.lowers ?? [], lowersPending: !!ov && lowersPending, signal, warn: this.warn });
      await tar.drain();
      d = await r.done();
      if (d.blobBytes !== desc.size) throw new Error(`read ${d.blobBytes} of its ${desc.size} bytes`);
      if (diffId ? d.tar !== diffId : d.blob !== desc.digest) throw new Error(`read ${d.blobBytes} bytes with digest ${d.blob || d.tar}`);
    } catch (e) {
      await (r.tar as AsyncGenerator<Buffer>).return?.(undefined);
      if (signal?.aborted) throw e;
      await emptyFolder(root);
      // nothing was read: the blob is committed (or on its way), and the caller applies that
      // one beside the parents rather than waiting for them as after an Aborted
      if ((e as NodeJS.ErrnoException).code === 'ERR_INGEST_GONE') throw new BerthError(Code.NotFound, `applying ${desc.digest} from its ingest: ${(e as Error).message}`);
      throw new BerthError(Code.Aborted, `applying ${desc.digest} from its ingest: ${(e as Error).message}`);
    }
    return { media_type: mediaTypeLayer, digest: d.tar, size: d.tarBytes };
  }

  /**
   * containerd's walking differ (Compare): `lower` mounted read-write and `upper` read-only on
   * temporary folders, the changes between them written as a layer (gzip unless the media type
   * says a plain tar) to content under `ref`, labelled with its uncompressed digest.
   */
  async diff(lower: readonly MountSpec[], upper: readonly MountSpec[], opts: DiffOptions, sink: ContentSink): Promise<Descriptor> {
    const mediaType = opts.media_type || mediaTypeLayerGzip;
    if (mediaType !== mediaTypeLayer && mediaType !== mediaTypeLayerGzip) {
      throw new BerthError(Code.Unimplemented, `unsupported diff media type: ${mediaType}: not implemented`);
    }
    const compressed = mediaType === mediaTypeLayerGzip;
    const labels = { ...(opts.labels ?? {}) };
    const newRef = !opts.ref;
    const ref = opts.ref || uniqueRef();
    let written: { digest: string; size: number } | undefined;
    await withTempMount(lower, (lowerRoot) =>
      withTempMount(readonlyMounts(upper), async (upperRoot) => {
        const tarHash = createHash('sha256');
        const blobHash = createHash('sha256');
        let size = 0;
        const tar = tap(writeDiff(lowerRoot, upperRoot), tarHash, { n: 0 });
        const body: AsyncIterable<Buffer> = compressed ? Readable.from(tar, { objectMode: false }).pipe(createGzip()) : tar;
        const blob = (async function* () {
          for await (const c of body) {
            blobHash.update(c);
            size += c.length;
            yield c as Buffer;
          }
        })();
        try {
          await sink.write(ref, blob, () => {
            if (compressed) labels[uncompressedLabel] = `sha256:${tarHash.digest('hex')}`;
            written = { digest: `sha256:${blobHash.digest('hex')}`, size };
            return { ...written, labels };
          });
        } catch (e) {
          if (isCode(e, Code.AlreadyExists) && written) return; // the store has this layer already
          if (newRef) await sink.abort(ref).catch(() => {});
          throw e;
        }
      }),
    );
    const w = written!;
    const info = await sink.labels(w.digest);
    if (!(uncompressedLabel in info.labels) && labels[uncompressedLabel]) await sink.setLabel(w.digest, uncompressedLabel, labels[uncompressedLabel]);
    return { media_type: mediaType, digest: w.digest, size: info.size };
  }
}
