// The reading thread of blobreader.ts: reads a blob file, hashes it, inflates it when it is gzip,
// hashes the tar stream, and hands the tar bytes over (moved, not copied) a few at a time.
// With `follow`, the file is an ingest still being written by a download: it is read as it
// grows, up to `follow` bytes (the blob's size).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { parentPort } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';

interface Job {
  id: number;
  path: string;
  /** the blob's digest algorithm; '' when the blob is not hashed (its digest is checked elsewhere) */
  alg: string;
  /** inflate when the bytes say gzip */
  detect: boolean;
  /** the file is still being appended to: read it as it grows, until it holds this many bytes */
  follow?: number;
}

/** the error code of a followed ingest that was gone before it was opened (blobreader's callers act on it) */
const ingestGone = 'ERR_INGEST_GONE';

const credits = new Map<number, { n: number; wake: (() => void) | null; stop: boolean }>();

// how often a followed file is looked at again when the writer has not caught up: a download
// appends a MiB every 10-30 ms here, and a look is one read call
const followPollMs = 4;

/**
 * The bytes of a file another process is appending to, as they come, until it has `size` of
 * them. A file that gets shorter than what was read (the download started over) is an error:
 * the caller applies the blob again once it is committed.
 */
function followFile(path: string, size: number, flow: { stop: boolean }): Readable {
  return Readable.from(
    (async function* () {
      let fh;
      try {
        fh = await open(path, 'r');
      } catch (e) {
        // the download ended and content moved the file into the store before this read began
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw Object.assign(new Error(`ingest ${path} is no longer there (committed meanwhile)`), { code: ingestGone });
        throw e;
      }
      try {
        let pos = 0;
        // a look that finds nothing new keeps its buffer for the next look: a fresh MiB per look,
        // every few ms while the download is behind, doubled this thread's GCs (--trace-gc: 22
        // external-memory scavenges per big pull, 11 now)
        let buf: Buffer | null = null;
        while (pos < size && !flow.stop) {
          if (!buf || buf.length > size - pos) buf = Buffer.allocUnsafe(Math.min(1 << 20, size - pos));
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
          if (bytesRead > 0) {
            pos += bytesRead;
            const got = buf.subarray(0, bytesRead);
            buf = null; // given away: the reader owns these bytes now
            yield got;
            continue;
          }
          if ((await fh.stat()).size < pos) throw new Error(`ingest ${path} was truncated while it was read`);
          await new Promise((r) => setTimeout(r, followPollMs));
        }
      } finally {
        await fh.close();
      }
    })(),
    { objectMode: false },
  );
}

async function run(job: Job): Promise<void> {
  const flow = { n: 0, wake: null as (() => void) | null, stop: false };
  credits.set(job.id, flow);
  const blobHash = job.alg ? createHash(job.alg) : null;
  const tarHash = createHash('sha256');
  let blobBytes = 0;
  let tarBytes = 0;
  try {
    const file: Readable = job.follow !== undefined ? followFile(job.path, job.follow, flow) : createReadStream(job.path, { highWaterMark: 1 << 20 });
    let src = file;
    if (job.detect) {
      const head = await new Promise<Buffer>((resolve, reject) => {
        file.once('error', reject);
        file.once('readable', () => {
          const c = (file.read() as Buffer | null) ?? Buffer.alloc(0);
          if (c.length) file.unshift(c);
          resolve(c);
        });
      });
      if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) {
        const gunzip = createGunzip({ chunkSize: 1 << 20 });
        file.on('error', (e) => gunzip.destroy(e));
        // in this same tick as the pipe, so the hash sees every chunk once
        file.on('data', (c) => {
          blobHash?.update(c as Buffer);
          blobBytes += c.length;
        });
        src = file.pipe(gunzip);
      }
    }
    /** Hands a piece of tar to the other thread, within its credit; false once told to stop. */
    const send = async (chunk: Buffer): Promise<boolean> => {
      while (flow.n <= 0 && !flow.stop) await new Promise<void>((r) => (flow.wake = r));
      if (flow.stop) return false;
      flow.n--;
      // moved to the other thread: as it is when it is all of its buffer, else a copy of its own
      // (a small buffer may be Node's shared pool, which must not move)
      let own: Uint8Array = chunk;
      if (chunk.byteOffset !== 0 || chunk.byteLength !== chunk.buffer.byteLength || chunk.buffer.byteLength <= Buffer.poolSize) {
        own = new Uint8Array(chunk.length);
        own.set(chunk);
      }
      parentPort!.postMessage({ id: job.id, chunk: own }, [own.buffer as ArrayBuffer]);
      return true;
    };
    // zlib fills a 1 MiB buffer of its own in pieces (as much as each read of the file gives)
    // and takes a new one once it is full, never writing again before the end of what it gave:
    // the pieces are held until their buffer is whole, which then moves without a copy
    let held: Buffer | null = null;
    for await (const c of src) {
      const chunk = c as Buffer;
      if (src === file) {
        blobHash?.update(chunk);
        blobBytes += chunk.length;
      }
      tarHash.update(chunk);
      tarBytes += chunk.length;
      if (held && held.buffer === chunk.buffer && held.byteOffset + held.length === chunk.byteOffset && held.buffer.byteLength > Buffer.poolSize) held = Buffer.from(held.buffer, held.byteOffset, held.length + chunk.length);
      else {
        if (held && !(await send(held))) break;
        held = chunk;
      }
      if (held.byteOffset + held.length === held.buffer.byteLength) {
        const whole = held;
        held = null;
        if (!(await send(whole))) break;
      }
    }
    if (flow.stop || (held && !(await send(held)))) {
      src.destroy();
      file.destroy();
      return;
    }
    parentPort!.postMessage({ id: job.id, end: true, blob: blobHash ? `${job.alg}:${blobHash.digest('hex')}` : '', blobBytes, tar: `sha256:${tarHash.digest('hex')}`, tarBytes });
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error).message, code: (e as NodeJS.ErrnoException).code });
  } finally {
    credits.delete(job.id);
  }
}

parentPort!.on('message', (m: Job | { id: number; credit?: number; stop?: boolean }) => {
  if ('path' in m) {
    void run(m);
    return;
  }
  const flow = credits.get(m.id);
  if (!flow) return;
  if (m.stop) flow.stop = true;
  if (m.credit) flow.n += m.credit;
  flow.wake?.();
  flow.wake = null;
});
