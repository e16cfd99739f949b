// The content service on the bus: containerd's Content API (every method, Read/List/Write
// streamed with flow control), the node-local fast path to a blob's file, lease resources, and
// the namespace-usage answer ("blobs") that lets namespace deletion refuse like containerd.
import { join } from 'node:path';
import { service as grpcService } from '@berth/api';
import { BusClient, BusServer, ChangeNotices, collectionBarrier, jsonBytes, leaseRefs, namespaceGuard, Outbox, parseJson, serveCollection, type BidiStream, type CallContext, type StreamContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import { ContentApi } from './api.js';
import { BlobStore } from './blobs.js';
import { blobPathMethod, ingestFileMethod } from './client.js';
import { Content, type ContentOptions } from './local.js';
import { ContentCollector } from './gc.js';
import { ContentStore } from './store.js';

/** What `ctr plugins ls` shows for content in containerd 1.6. */
export const plugins = [
  { type: 'io.containerd.content.v1', id: 'content' },
  { type: 'io.containerd.service.v1', id: 'content-service', requires: ['io.containerd.event.v1', 'io.containerd.metadata.v1'] },
  { type: 'io.containerd.grpc.v1', id: 'content', requires: ['io.containerd.service.v1'] },
];

/** Where things live under the service's root (`<root>/content`). */
export const layout = (root: string) => ({ blobs: root, meta: join(root, 'meta') });

export async function start(env: ServiceEnv, opts: ContentOptions = {}): Promise<Stop> {
  const paths = layout(env.root);
  const blobs = await BlobStore.open(paths.blobs);
  // change notices for the gateway's read cache: Info (and the BlobPath of a Read the gateway
  // serves from the file) is answered there until a record changes
  const changes = new ChangeNotices(env.nc, env.node, 'content');
  const db = await openStore(paths.meta, { watch: changes });
  const client = new BusClient(env.nc);
  // content written under a lease is recorded by the lease's owner, when this node runs a leases service
  const leases = env.config.services.includes('leases') ? { leases: leaseRefs(client, env.node) } : {};
  const outbox = await new Outbox(db, env.nc, { service: 'content', node: env.node }).start();
  let content!: Content;
  const guard = namespaceGuard(client, env.node, env.config.services, { kinds: (ns) => content.usage(ns) });
  const policy = env.config.content.sharing_policy;
  if (policy !== 'shared' && policy !== 'isolated') throw new Error(`config: content.sharing_policy must be "shared" or "isolated", not "${policy}"`);
  // the collector's write barrier: record writes wait while it reads the records (@berth/bus gc.ts)
  let collector!: ContentCollector;
  const barrier = await collectionBarrier(env.nc, env.node, env.config.services, db, { written: (ops) => collector.noteWrites(ops) });
  content = new Content(blobs, new ContentStore(barrier.gate(db)), outbox, { ...leases, guard, shared: policy === 'shared', ...opts });
  collector = new ContentCollector(content, outbox);
  const api = new ContentApi(content);
  changes.reset();
  const bus = await BusServer.start(env.nc, { name: 'content', node: env.node, metadata: { plugins: JSON.stringify(plugins) }, changes, cacheable: ['Info', blobPathMethod] });
  bus.serveGrpc(grpcService('containerd.services.content.v1.Content'), {
    Info: (req, ctx: CallContext) => api.info(req, ctx),
    Update: (req, ctx: CallContext) => api.update(req, ctx),
    List: (req, ctx: StreamContext, send) => api.list(req, ctx, send),
    Delete: (req, ctx: CallContext) => api.delete(req, ctx),
    Read: (req, ctx: StreamContext, send) => api.read(req, ctx, send),
    Status: (req, ctx: CallContext) => api.status(req, ctx),
    ListStatuses: (req, ctx: CallContext) => api.listStatuses(req, ctx),
    Write: (ctx: StreamContext, stream: BidiStream) => api.write(ctx, stream.recv(), (m) => stream.send(m)),
    Abort: (req, ctx: CallContext) => api.abort(req, ctx),
  });
  // JSON in and out: for other Berth services on this node, not part of containerd's API
  bus.raw(blobPathMethod, async (data, ctx) => jsonBytes(await content.blobPath(ctx, parseJson<{ digest?: string }>(data).digest ?? '')), { json: 'true' });
  bus.raw(
    ingestFileMethod,
    async (data, ctx) => {
      const r = parseJson<{ ref?: string; total?: number; expected?: string }>(data);
      return jsonBytes(await content.ingestFile(ctx, r.ref ?? '', Number(r.total ?? 0), r.expected ?? ''));
    },
    { json: 'true' },
  );
  guard.serve(bus);
  serveCollection(bus, barrier, { references: () => collector.references(), sweep: (req, live) => collector.sweep(req, live), untidy: () => collector.untidy() });
  return async () => {
    barrier.stop();
    outbox.stop();
    await bus.stop();
    await db.close();
  };
}
