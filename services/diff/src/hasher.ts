// Digests computed on a thread of their own. A layer is hashed twice (the blob, to check it
// against its descriptor, and the tar stream, to report it): on the main thread that was half of
// an Apply's time; beside it, it runs on the second core while this one unpacks.
import { Worker } from 'node:worker_threads';

let worker: Worker | null = null;
let next = 0;
const waiting = new Map<number, (hex: string) => void>();

function thread(): Worker {
  if (worker) return worker;
  const w = new Worker(new URL('./hashworker.js', import.meta.url));
  w.on('message', (m: { id: number; hex: string }) => {
    waiting.get(m.id)?.(m.hex);
    waiting.delete(m.id);
    if (waiting.size === 0) w.unref();
  });
  w.on('error', () => {
    worker = null;
  });
  w.on('exit', () => {
    if (worker === w) worker = null;
    for (const [id, done] of waiting) {
      waiting.delete(id);
      done('');
    }
  });
  w.unref(); // after the listeners, which ref it: an idle hashing thread keeps no process alive
  return (worker = w);
}

export interface OffThreadHash {
  update(chunk: Buffer): void;
  /** `alg:hex`; rejects if the thread died. */
  digest(): Promise<string>;
  readonly bytes: number;
}

export function offThreadHash(alg: string): OffThreadHash {
  const w = thread();
  const id = ++next;
  let bytes = 0;
  w.postMessage({ id, alg });
  return {
    update(chunk) {
      bytes += chunk.length;
      // copied to the thread: the reader may reuse the chunk's memory
      w.postMessage({ id, chunk });
    },
    digest() {
      return new Promise((resolve, reject) => {
        waiting.set(id, (hex) => (hex ? resolve(`${alg}:${hex}`) : reject(new Error('hashing thread exited'))));
        w.ref(); // an answer is awaited
        w.postMessage({ id, end: true });
      });
    },
    get bytes() {
      return bytes;
    },
  };
}
