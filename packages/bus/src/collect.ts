// Stream frames are buffers outside V8's heap (a 1 MiB frame gathered from NATS, a gRPC message,
// NATS's outbound copy), and V8 frees dead ones only when it collects, which it does for such
// memory after about 64 MB more of it was allocated. A process moving a stream held tens of MB of
// dead frames at its peak (the gateway: +34 MB during a 64 MiB Write; content the same). Frames
// die young, so a minor collection (a scavenge of the 1 MB young generation) every few MiB
// streamed frees them as they go: measured, the gateway's peak rose 12 MB instead of 34, and
// its CPU per MiB fell (the collections it saved were full ones).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (o?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gc: Gc | undefined | null = null;

function collector(): Gc | undefined {
  if (gc === null) {
    try {
      setFlagsFromString('--expose-gc');
      const f = runInNewContext('gc') as unknown;
      gc = typeof f === 'function' ? (f as Gc) : undefined;
    } catch {
      gc = undefined;
    }
  }
  return gc;
}

/** Bytes streamed through this process between minor collections. */
export const collectEvery = 2 << 20;
let since = 0;

/** Counts stream bytes this process moved; collects the young generation every `collectEvery`. */
export function streamed(n: number): void {
  since += n;
  if (since < collectEvery) return;
  since = 0;
  collector()?.({ type: 'minor' });
}
