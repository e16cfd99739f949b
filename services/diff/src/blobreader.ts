// A local blob file read, hashed and inflated on a thread beside this one (blobworker.ts), so the
// main thread only parses the tar and writes files: on two cores the unpacking path then has one
// to itself. The tar bytes are moved between threads, not copied, and at most `window` chunks (of 1 MiB) are
// in flight, so a slow disk holds the reading back rather than memory growing.
import { Worker } from 'node:worker_threads';

let worker: Worker | null = null;
let next = 0;
let busy = 0;
type Msg = { id: number; chunk?: Uint8Array; end?: boolean; blob?: string; blobBytes?: number; tar?: string; tarBytes?: number; error?: string; code?: string };
const jobs = new Map<number, (m: Msg) => void>();

function thread(): Worker {
  if (worker) return worker;
  const w = new Worker(new URL('./blobworker.js', import.meta.url));
  w.on('message', (m: Msg) => jobs.get(m.id)?.(m));
  w.on('error', () => {});
  w.on('exit', () => {
    if (worker === w) worker = null;
    for (const [id, deliver] of jobs) deliver({ id, error: 'blob reading thread exited' });
  });
  w.unref(); // after the listeners, which ref it: an idle thread keeps no process alive
  return (worker = w);
}

/** Starts the reading thread ahead of the first read (it stays unreferenced while idle). */
export function warmUp(): void {
  thread();
}

export interface BlobRead {
  /** the tar stream */
  tar: AsyncIterable<Buffer>;
  /** once `tar` is read to its end: the blob's and the tar stream's digests and sizes */
  done(): Promise<{ blob: string; blobBytes: number; tar: string; tarBytes: number }>;
}

/**
 * `follow`: the file is an ingest a download is still appending to; it is read as it grows until
 * it holds that many bytes. `signal` ends a read that waits for bytes.
 */
export function readBlobFile(path: string, alg: string, inflate: boolean, opts: { window?: number; follow?: number; signal?: AbortSignal } = {}): BlobRead {
  const window = opts.window ?? 4;
  const w = thread();
  const id = ++next;
  const queue: Msg[] = [];
  let wake: (() => void) | null = null;
  let result: Msg | null = null;
  jobs.set(id, (m) => {
    queue.push(m);
    wake?.();
    wake = null;
  });
  if (busy++ === 0) w.ref();
  const finish = () => {
    if (!jobs.delete(id)) return;
    if (--busy === 0) w.unref();
  };
  const onAbort = () => {
    queue.push({ id, error: 'context canceled', code: 'ABORT_ERR' });
    wake?.();
    wake = null;
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  w.postMessage({ id, path, alg, detect: inflate, follow: opts.follow });
  w.postMessage({ id, credit: window });
  const tar = (async function* () {
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((r) => (wake = r));
        const m = queue.shift()!;
        if (m.error !== undefined) throw Object.assign(new Error(m.error), { code: m.code });
        if (m.end) {
          result = m;
          return;
        }
        w.postMessage({ id, credit: 1 });
        yield Buffer.from(m.chunk!.buffer, m.chunk!.byteOffset, m.chunk!.byteLength);
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (!result) w.postMessage({ id, stop: true });
      finish();
    }
  })();
  return {
    tar,
    async done() {
      if (!result) throw new Error('blob not read to its end');
      return { blob: result.blob!, blobBytes: result.blobBytes!, tar: result.tar!, tarBytes: result.tarBytes! };
    },
  };
}
