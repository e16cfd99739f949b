// The reading thread of blobreader.ts: reads a blob file, hashes it, inflates it when it is gzip,
// hashes the tar stream, and hands the tar bytes over (moved, not copied) a few at a time.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { parentPort } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';

interface Job {
  id: number;
  path: string;
  alg: string;
  /** inflate when the bytes say gzip */
  detect: boolean;
}

const credits = new Map<number, { n: number; wake: (() => void) | null; stop: boolean }>();

async function run(job: Job): Promise<void> {
  const flow = { n: 0, wake: null as (() => void) | null, stop: false };
  credits.set(job.id, flow);
  const blobHash = createHash(job.alg);
  const tarHash = createHash('sha256');
  let blobBytes = 0;
  let tarBytes = 0;
  try {
    const file = createReadStream(job.path, { highWaterMark: 1 << 20 });
    let src: Readable = file;
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
          blobHash.update(c as Buffer);
          blobBytes += c.length;
        });
        src = file.pipe(gunzip);
      }
    }
    for await (const c of src) {
      const chunk = c as Buffer;
      if (src === file) {
        blobHash.update(chunk);
        blobBytes += chunk.length;
      }
      tarHash.update(chunk);
      tarBytes += chunk.length;
      while (flow.n <= 0 && !flow.stop) await new Promise<void>((r) => (flow.wake = r));
      if (flow.stop) {
        src.destroy();
        file.destroy();
        return;
      }
      flow.n--;
      // a copy of its own, so it can be moved to the other thread
      const own = new Uint8Array(chunk.length);
      own.set(chunk);
      parentPort!.postMessage({ id: job.id, chunk: own }, [own.buffer]);
    }
    parentPort!.postMessage({ id: job.id, end: true, blob: `${job.alg}:${blobHash.digest('hex')}`, blobBytes, tar: `sha256:${tarHash.digest('hex')}`, tarBytes });
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
