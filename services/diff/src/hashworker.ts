// The hashing thread of hasher.ts: the digest of a file, read here from the page cache, so
// nothing is copied between threads.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { parentPort } from 'node:worker_threads';

parentPort!.on('message', async (m: { id: number; alg: string; path: string }) => {
  try {
    const h = createHash(m.alg);
    let bytes = 0;
    for await (const c of createReadStream(m.path, { highWaterMark: 1 << 20 })) {
      h.update(c as Buffer);
      bytes += (c as Buffer).length;
    }
    parentPort!.postMessage({ id: m.id, hex: h.digest('hex'), bytes });
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: (e as Error).message });
  }
});
