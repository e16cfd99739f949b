// The images service on the bus: containerd's Images API over the plain library.
import { nowTimestamp, service as grpcService } from '@berth/api';
import { BusClient, BusServer, collectionBarrier, gcCollect, namespaceGuard, namespaceRequired, Outbox, serveCollection, type CallContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import { Images, type Image } from './local.js';

export const plugins = [
  { type: 'io.containerd.grpc.v1', id: 'images' },
  { type: 'io.containerd.service.v1', id: 'images-service' },
];

const ns = namespaceRequired;

export async function start(env: ServiceEnv): Promise<Stop> {
  const db = await openStore(env.root);
  const outbox = await new Outbox(db, env.nc, { service: 'images', node: env.node }).start();
  let images!: Images;
  const guard = namespaceGuard(new BusClient(env.nc), env.node, env.config.services, { kinds: async (n) => ((await images.hasAny(n)) ? ['images'] : []) });
  // the collector's write barrier: image writes wait while it reads the records (@berth/bus gc.ts)
  const barrier = await collectionBarrier(env.nc, env.node, env.config.services, db);
  images = new Images(barrier.gate(db), outbox, nowTimestamp, guard);
  const bus = await BusServer.start(env.nc, { name: 'images', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.images.v1.Images'), {
    Get: async (req: { name: string }, ctx: CallContext) => ({ image: await images.get(ns(ctx), req.name) }),
    List: async (req: { filters: string[] }, ctx: CallContext) => ({ images: await images.list(ns(ctx), req.filters ?? []) }),
    Create: async (req: { image: Image }, ctx: CallContext) => ({ image: await images.create(ns(ctx), req.image) }),
    Update: async (req: { image: Image; update_mask: { paths: string[] } | null }, ctx: CallContext) => ({
      image: await images.update(ns(ctx), req.image, req.update_mask?.paths ?? []),
    }),
    Delete: async (req: { name: string; sync?: boolean }, ctx: CallContext) => {
      await images.delete(ns(ctx), req.name);
      // containerd's sync: return after the collection that follows
      if (req.sync) await gcCollect(new BusClient(env.nc), env.node, env.config.services);
      return {};
    },
  });
  guard.serve(bus);
  serveCollection(bus, barrier, { references: () => images.gcRecords() });
  return async () => {
    barrier.stop();
    outbox.stop();
    await bus.stop();
    await db.close();
  };
}
