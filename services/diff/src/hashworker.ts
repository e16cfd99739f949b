// The hashing thread of hasher.ts: digests of streams whose chunks it is sent.
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

type Msg = { id: number; alg?: string; chunk?: Uint8Array; end?: boolean };

const hashes = new Map<number, Hash>();
parentPort!.on('message', (m: Msg) => {
  if (m.alg) hashes.set(m.id, createHash(m.alg));
  if (m.chunk) hashes.get(m.id)?.update(m.chunk);
  if (m.end) {
    const h = hashes.get(m.id);
    hashes.delete(m.id);
    parentPort!.postMessage({ id: m.id, hex: h ? h.digest('hex') : '' });
  }
});
