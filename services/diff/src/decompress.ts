// A layer blob's bytes to its tar stream, chosen as containerd does: the media type says whether
// the layer may be compressed (images.DiffCompression), and if it may, the first bytes say how
// (compression.DecompressStream: gzip, zstd, or none).
//
// gzip: Node's zlib, on the thread pool. zstd: Debian's `zstd` as a streaming child process;
// measured on an 840 MB tar it decodes in 3.5-5 s against 14-20 s for the pure-JS fzstd, and it
// runs beside the unpacking on the second core.
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { BerthError, Code } from '@berth/errdefs';

export type Compression = 'none' | 'gzip' | 'zstd';

const docker = {
  layer: 'application/vnd.docker.image.rootfs.diff.tar',
  layerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  foreign: 'application/vnd.docker.image.rootfs.foreign.diff.tar',
  foreignGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
};
const oci = {
  layer: 'application/vnd.oci.image.layer.v1.tar',
  nondist: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
};

/**
 * What containerd's DiffCompression says of a media type: '' (plain tar), 'unknown' (look at the
 * bytes), 'gzip', 'zstd'; null for a type that is not a layer (containerd: no processor).
 */
export function diffCompression(mediaType: string): '' | 'unknown' | 'gzip' | 'zstd' | null {
  const [base, ...ext] = mediaType.split('+');
  ext.sort();
  switch (base) {
    case docker.layer:
    case docker.foreign:
      return ext.length ? '' : 'unknown';
    case docker.layerGzip:
    case docker.foreignGzip:
      return ext.length ? '' : 'gzip';
    case oci.layer:
    case oci.nondist: {
      const last = ext[ext.length - 1];
      return last === 'gzip' || last === 'zstd' ? last : '';
    }
    default:
      return null;
  }
}

/** containerd's answer for a media type no stream processor takes. */
export function noProcessor(mediaType: string): BerthError {
  return new BerthError(Code.Unknown, `failed to get stream processor for ${mediaType}: no processor for media-type`);
}

export function detect(head: Buffer): Compression {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return 'gzip';
  if (head.length >= 4) {
    const magic = head.readUInt32LE(0);
    if (magic === 0xfd2fb528 || (magic & 0xfffffff0) === 0x184d2a50) return 'zstd';
  }
  return 'none';
}

async function* zstd(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const child = spawn('zstd', ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d.slice(0, 4096)));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (e) => reject(new BerthError(Code.Unknown, `zstd: ${(e as Error).message}`)));
    child.on('close', (code) => resolve(code));
  });
  exited.catch(() => {});
  const feed = Readable.from(src);
  feed.on('error', (e) => child.stdin.destroy(e));
  child.stdin.on('error', () => {}); // zstd stopped reading: its exit status tells why
  feed.pipe(child.stdin);
  try {
    for await (const c of child.stdout) yield c as Buffer;
    const code = await exited;
    if (code !== 0) throw new BerthError(Code.Unknown, `zstd: ${stderr.trim() || `exit status ${code}`}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    feed.destroy();
  }
}

/** The first bytes of `src` without consuming them (fewer only if the stream is shorter). */
async function peek(src: Readable, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  while (got < n) {
    const c = src.read() as Buffer | null;
    if (c !== null) {
      parts.push(c);
      got += c.length;
      continue;
    }
    if (src.readableEnded || src.destroyed) break;
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        src.off('readable', done).off('end', done).off('error', fail);
        resolve();
      };
      const fail = (e: Error) => {
        src.off('readable', done).off('end', done);
        reject(e);
      };
      src.once('readable', done).once('end', done).once('error', fail);
    });
    if (src.readableEnded) break;
  }
  const head = Buffer.concat(parts);
  if (head.length) src.unshift(head);
  return head;
}

async function* passing(src: Readable, onRaw: (c: Buffer) => void): AsyncGenerator<Buffer> {
  for await (const c of src) {
    onRaw(c as Buffer);
    yield c as Buffer;
  }
}

/**
 * The tar stream of a layer blob of `mediaType`; `onRaw` sees every byte of the blob itself.
 * Throws containerd's error for a media type it has no processor for before reading anything.
 * The blob is piped, not iterated, into zlib: async-iterator hops between the file and zlib cost
 * more than the inflating.
 */
export async function decompress(src: Readable, mediaType: string, onRaw: (c: Buffer) => void): Promise<AsyncIterable<Buffer>> {
  const c = diffCompression(mediaType);
  if (c === null) throw noProcessor(mediaType);
  if (c === '') return passing(src, onRaw);
  const head = await peek(src, 4);
  switch (detect(head)) {
    case 'gzip': {
      const gunzip = createGunzip({ chunkSize: 1 << 20 });
      src.on('error', (e) => gunzip.destroy(e));
      // both listeners in this same tick, before any data flows: each sees every chunk once
      src.on('data', onRaw);
      return src.pipe(gunzip);
    }
    case 'zstd':
      return zstd(passing(src, onRaw));
    default:
      return passing(src, onRaw);
  }
}
