// The diff service's logic, without NATS: Apply (a layer blob onto mounts) as containerd's
// fsApplier with the walking differ's behaviour.
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BerthError, failedPrecondition, invalidArgument } from '@berth/errdefs';
import type { MountSpec } from '@berth/native';
import { hashFile } from './hasher.js';
import { applyLayer, type ApplyOptions } from './apply.js';
import { decompress, diffCompression, noProcessor } from './decompress.js';
import { overlayPaths, withTempMount } from './mounts.js';
import { TarReader } from './tar.js';

export interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export const mediaTypeLayer = 'application/vnd.oci.image.layer.v1.tar';

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

export class Differ {
  constructor(
    private readonly warn: (msg: string) => void = () => {},
  ) {}

  /**
   * Applies the layer `desc` onto `mounts` and returns the uncompressed layer's descriptor. The
   * blob streams through decompression and the tar reader; its digest is checked against `desc`
   * once read to the end.
   */
  async apply(open: BlobOpener, desc: Descriptor, mounts: readonly MountSpec[], signal?: AbortSignal): Promise<Descriptor> {
    if (!desc?.digest) throw invalidArgument('descriptor digest is required');
    const alg = algorithm(desc.digest);
    const blob = await open(desc.digest).catch((e: unknown) => {
      throw e instanceof BerthError ? e.wrap('failed to get reader from content store') : e;
    });
    const raw = blob.stream;
    if (diffCompression(desc.media_type) === null) {
      raw.destroy();
      throw noProcessor(desc.media_type);
    }

    // the blob's own digest: from its file on a thread beside this one, else as it streams by
    const inline = blob.path ? null : createHash(alg);
    let inlineBytes = 0;
    const fileDigest = blob.path ? hashFile(blob.path, alg) : null;
    fileDigest?.catch(() => {});
    const uncompressed = createHash('sha256');
    const uCount = { n: 0 };
    let decompressed: AsyncIterable<Buffer>;
    try {
      decompressed = await decompress(raw, desc.media_type, (c) => {
        inline?.update(c);
        inlineBytes += c.length;
      });
    } catch (e) {
      raw.destroy();
      throw e;
    }
    const tarStream = tap(decompressed, uncompressed, uCount);
    const tar = new TarReader(tarStream);
    const run = async (root: string, opts: ApplyOptions) => {
      await applyLayer(root, tar, { ...opts, signal, warn: this.warn });
      await tar.drain(); // trailing bytes are part of the layer's digest
    };

    const ov = mounts.length === 1 && mounts[0].type === 'overlay' ? overlayPaths(mounts[0].options) : null;
    if (ov) await run(ov.upper, { overlay: true, parents: ov.lowers });
    else if (mounts.length === 0) throw invalidArgument('no mounts to apply the layer to');
    else if (writableBind(mounts)) await run(mounts[0].source, {});
    else await withTempMount(mounts, (root) => run(root, {}));

    const got = fileDigest ? await fileDigest : { digest: `${alg}:${inline!.digest('hex')}`, bytes: inlineBytes };
    if (got.digest !== desc.digest) {
      throw failedPrecondition(`content ${desc.digest} does not match its descriptor: read ${got.bytes} bytes with digest ${got.digest}`);
    }
    return { media_type: mediaTypeLayer, digest: `sha256:${uncompressed.digest('hex')}`, size: uCount.n };
  }
}
