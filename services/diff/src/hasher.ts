// A blob file's digest, computed on a thread of its own while the main thread unpacks the same
// file: the check of a layer against its descriptor then costs no time on the unpacking path.
// (Sending the chunks to a thread instead was measured: the copies cost as much as the hashing.)
import { Worker } from 'node:worker_threads';

let worker: Worker | null = null;
let next = 0;
const waiting = new Map<number, (r: { hex?: string; bytes?: number; error?: string }) => void>();

function thread(): Worker {
  if (worker) return worker;
  const w = new Worker(new URL('./hashworker.js', import.meta.url));
  w.on('message', (m: { id: number; hex?: string; bytes?: number; error?: string }) => {
    waiting.get(m.id)?.(m);
    waiting.delete(m.id);
    if (waiting.size === 0) w.unref();
  });
  w.on('exit', () => {
    if (worker === w) worker = null;
    for (const [id, done] of waiting) {
      waiting.delete(id);
      done({ error: 'hashing thread exited' });
    }
  });
  w.on('error', () => {});
  w.unref(); // after the listeners, which ref it: an idle hashing thread keeps no process alive
  return (worker = w);
}

/** `alg:hex` and the size of the file at `path`. */
export function hashFile(path: string, alg: string): Promise<{ digest: string; bytes: number }> {
  const w = thread();
  const id = ++next;
  return new Promise((resolve, reject) => {
    waiting.set(id, (r) => (r.hex !== undefined ? resolve({ digest: `${alg}:${r.hex}`, bytes: r.bytes ?? 0 }) : reject(new Error(`hashing ${path}: ${r.error}`))));
    w.ref(); // an answer is awaited
    w.postMessage({ id, alg, path });
  });
}
