// A process's heap after a full collection, on request: how a test tells a leak from garbage not
// yet collected (test/src/memory.test.ts). Off unless the process's environment says
// BERTH_DEBUG_HEAP=1: a collection on demand stalls the process, which no production caller may
// trigger. Subject: heapSubject in @berth/bus (who may ask: packages/natsd/src/auth.ts).
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { heapSubject } from '@berth/bus';

export const debugHeapEnv = 'BERTH_DEBUG_HEAP';

export interface HeapReport {
  pid: number;
  /** bytes of the V8 heap in use after two full collections */
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  rss: number;
}

/** Answers heap requests for process `name` when the environment enables it; else nothing. */
export function serveHeap(nc: NatsConnection, name: string, node: string): Subscription | undefined {
  if (process.env[debugHeapEnv] !== '1') return undefined;
  // --expose-gc without a command-line flag: the function exists in contexts made after this
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  return nc.subscribe(heapSubject(node, name), {
    callback: (err, msg) => {
      if (err) return;
      // after the current turn: what it allocated is garbage by then; twice, so that objects
      // kept only by finalizers and weak references of the first pass go too
      setImmediate(() => {
        gc();
        gc();
        const m = process.memoryUsage();
        const r: HeapReport = { pid: process.pid, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss };
        msg.respond(JSON.stringify(r));
      });
    },
  });
}
