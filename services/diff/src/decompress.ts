// A layer blob's bytes to its tar stream, chosen as containerd does: the media type says whether
// the layer may be compressed (images.DiffCompression), and if it may, the first bytes say how
// (compression.DecompressStream: gzip, zstd, or none).
//
// gzip: Node's zlib, on the thread pool. zstd: Debian's `zstd` as a streaming child process;
// measured on an 840 MB tar it decodes in 3.5-5 s against 14-20 s for the pure-JS fzstd, and it
// runs beside the unpacking on the second core.
import { spawn } from 'node:child_process';
import { Readable, type Duplex } from 'node:stream';
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

async function* prepend(first: Buffer, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  if (first.length) yield first;
  for (;;) {
    const r = await rest.next();
    if (r.done) return;
    yield r.value;
  }
}

function through(src: AsyncIterable<Buffer>, t: Duplex): AsyncIterable<Buffer> {
  const input = Readable.from(src, { objectMode: false });
  input.on('error', (e) => t.destroy(e));
  input.pipe(t);
  return t;
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

/**
 * The tar stream of a layer blob of `mediaType`. Throws containerd's error for a media type it
 * has no processor for before reading anything.
 */
export function decompress(src: AsyncIterable<Buffer>, mediaType: string): AsyncIterable<Buffer> {
  const c = diffCompression(mediaType);
  if (c === null) throw noProcessor(mediaType);
  if (c === '') return src;
  return (async function* () {
    const it = src[Symbol.asyncIterator]();
    // enough bytes to tell the formats apart
    let head = Buffer.alloc(0);
    while (head.length < 4) {
      const r = await it.next();
      if (r.done) break;
      head = Buffer.concat([head, r.value]);
    }
    const all = prepend(head, it);
    switch (detect(head)) {
      case 'gzip':
        yield* through(all, createGunzip({ chunkSize: 256 << 10 }));
        return;
      case 'zstd':
        yield* zstd(all);
        return;
      default:
        yield* all;
    }
  })();
}
