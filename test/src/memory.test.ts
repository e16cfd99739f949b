// Nothing grows with use: 10,000 unary calls (reads of every service a client reaches, a quarter
// of them namespace updates: store commits and events) and 100 streams opened and closed leave each process's heap, measured inside it after full collections,
// within a few MB of where it was after a warm-up. The heap, not RSS: RSS keeps what the
// allocator once took, and says nothing about a leak.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { NatsConnection } from '@nats-io/nats-core';
import { codec, method } from '@berth/api';
import { heapSubject } from '@berth/bus';
import { defaultConfig, type HeapReport } from '@berth/kit';
import { metadata, writeBlob } from './grpc.js';
import { natsWith, startStack, type Stack } from './harness.js';

const node = 'mem-node';
const ns = 'memtest';
/** what a process's heap may differ by after the load: JIT code and caches that settle */
const slackMb = 2;
const id = (b: Buffer) => b;

describe('memory', () => {
  let stack: Stack;
  let nc: NatsConnection;
  let c: grpc.Client;
  let names: string[];
  const blob = Buffer.from('memory test blob\n'.repeat(64));
  const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex');
  const md = metadata(ns);

  before(async () => {
    stack = await startStack({ node, env: { BERTH_DEBUG_HEAP: '1' } });
    // only the gateway's credential may ask a process for its heap (packages/kit/src/heap.ts)
    nc = await natsWith(stack.natsUrl, stack.credentials('gateway'));
    c = new grpc.Client(`unix:${stack.sock}`, grpc.credentials.createInsecure());
    // every service process of the stack (the supervisor and nats-server are not ours to measure)
    names = defaultConfig().services;
    // held by a lease: unleased content would be collected while the streams read it
    await call('/containerd.services.leases.v1.Leases/Create', { id: 'mem-lease' });
    assert.equal(await writeBlob(stack.sock, metadata(ns, 'mem-lease'), 'mem-blob', blob, digest), 'ok');
  });

  after(async () => {
    c?.close();
    await nc?.close();
    await stack?.stop();
  });

  function call(path: string, req: Record<string, unknown>): Promise<unknown> {
    const m = method(path);
    return new Promise((resolve, reject) => {
      c.makeUnaryRequest(path, id, id, Buffer.from(codec(m.requestType).encode(req)), md, { deadline: Date.now() + 30_000 }, (e, r) =>
        e ? reject(e) : resolve(codec(m.responseType).decode(r!)));
    });
  }

  /** Opens a server stream and reads it to its end; or, with `cancelMs`, cancels it once it is open. */
  function stream(path: string, req: Record<string, unknown>, cancelMs?: number): Promise<void> {
    const m = method(path);
    return new Promise((resolve, reject) => {
      const s = c.makeServerStreamRequest(path, id, id, Buffer.from(codec(m.requestType).encode(req)), md, { deadline: Date.now() + 30_000 });
      let timer: NodeJS.Timeout | undefined;
      const cancel = () => {
        clearTimeout(timer);
        s.cancel();
      };
      // open: the server sent its headers, or the call has had time to reach the service
      if (cancelMs !== undefined) {
        timer = setTimeout(cancel, cancelMs);
        s.on('metadata', cancel);
      }
      s.on('data', () => undefined);
      s.on('error', (e: grpc.ServiceError) => (e.code === grpc.status.CANCELLED && cancelMs !== undefined ? resolve() : reject(e)));
      s.on('end', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // a mix that reaches every service a client reaches, gateway's own answers included
  const unaries: Array<[string, Record<string, unknown>]> = [
    ['/containerd.services.namespaces.v1.Namespaces/List', {}],
    ['/containerd.services.content.v1.Content/Info', { digest }],
    ['/containerd.services.leases.v1.Leases/List', {}],
    ['/containerd.services.images.v1.Images/List', {}],
    ['/containerd.services.containers.v1.Containers/List', {}],
    ['/containerd.services.snapshots.v1.Snapshots/Stat', { snapshotter: 'overlayfs', key: 'no-such-key' }],
    ['/containerd.services.tasks.v1.Tasks/List', {}],
    ['/containerd.services.version.v1.Version/Version', {}],
  ];
  const update = (i: number): [string, Record<string, unknown>] => [
    '/containerd.services.namespaces.v1.Namespaces/Update',
    { namespace: { name: ns, labels: { mem: String(i) } }, update_mask: { paths: ['labels.mem'] } },
  ];
  const streams: Array<[string, Record<string, unknown>, number?]> = [
    ['/containerd.services.events.v1.Events/Subscribe', { filters: ['topic=="/memtest/none"'] }, 200],
    ['/containerd.services.content.v1.Content/Read', { digest }],
    ['/containerd.services.snapshots.v1.Snapshots/List', { snapshotter: 'overlayfs' }],
  ];

  async function load(calls: number, opened: number): Promise<void> {
    let next = 0;
    // 16 in flight; a NotFound is an answer like any other
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let i = next++; i < calls; i = next++) {
        // every fourth call writes: a store commit and an event (the outbox's own commits too)
        const [path, req] = i % 4 === 1 ? update(i) : unaries[i % unaries.length]!;
        await call(path, req).catch((e: grpc.ServiceError) => assert.equal(e.code, grpc.status.NOT_FOUND, `${path}: ${e.message}`));
      }
    }));
    next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = next++; i < opened; i = next++) {
        const [path, req, cancelMs] = streams[i % streams.length]!;
        await stream(path, req, cancelMs);
      }
    }));
  }

  async function heaps(): Promise<Map<string, HeapReport>> {
    const out = new Map<string, HeapReport>();
    for (const name of names) {
      const m = await nc.request(heapSubject(node, name), '', { timeout: 20_000 });
      out.set(name, JSON.parse(m.string()) as HeapReport);
    }
    return out;
  }

  test('10,000 unary calls and 100 opened-and-closed streams leave every heap where it was', { timeout: 240_000 }, async () => {
    // warm-up: connections, JIT, caches and lazily loaded modules settle
    await load(1000, 30);
    const before = await heaps();
    await load(10_000, 100);
    const afterLoad = await heaps();
    const rows = names.map((n) => {
      const b = before.get(n)!;
      const a = afterLoad.get(n)!;
      return { name: n, before: b.heapUsed / 2 ** 20, after: a.heapUsed / 2 ** 20, growth: (a.heapUsed - b.heapUsed) / 2 ** 20 };
    });
    const table = rows.map((r) => `${r.name} ${r.before.toFixed(1)} → ${r.after.toFixed(1)} MB`).join(', ');
    console.log(`heap after GC: ${table}`);
    // every process answered as itself: the same one before and after (none restarted)
    for (const n of names) assert.equal(afterLoad.get(n)!.pid, before.get(n)!.pid, `${n} restarted`);
    for (const r of rows) assert.ok(r.growth < slackMb, `${r.name}: heap grew by ${r.growth.toFixed(1)} MB (${table})`);
  });
});
