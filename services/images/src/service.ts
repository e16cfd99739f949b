// The images service on the bus: containerd's Images API over the plain library, and Berth's
// Transfer API (server-side pull) beside it.
import { nowTimestamp, service as grpcService } from '@berth/api';
import { BusClient, BusServer, ChangeNotices, collectionBarrier, gcCollect, namespaceGuard, namespaceRequired, Outbox, serveCollection, type CallContext } from '@berth/bus';
import { isCode, Code } from '@berth/errdefs';
import { log, type ServiceEnv, type Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import { loadDockerConfig } from './auth.js';
import { busBackends, warmCodecs } from './backends.js';
import { warmUpFetch } from './warmup.js';
import { Images, type Image } from './local.js';
import { Puller, type PullerConfig } from './pull.js';
import { Pusher } from './push.js';
import { Archiver, Importer } from './archive.js';
import { serveTransfer } from './transfer.js';

export const plugins = [
  { type: 'io.containerd.grpc.v1', id: 'images' },
  { type: 'io.containerd.service.v1', id: 'images-service' },
];

const ns = namespaceRequired;

export async function start(env: ServiceEnv): Promise<Stop> {
  // change notices for the gateway's read cache: Get and List are answered there until a record changes
  const changes = new ChangeNotices(env.nc, env.node, 'images');
  const db = await openStore(env.root, { watch: changes });
  const outbox = await new Outbox(db, env.nc, { service: 'images', node: env.node }).start();
  let images!: Images;
  const client = new BusClient(env.nc);
  const guard = namespaceGuard(client, env.node, env.config.services, { kinds: async (n) => ((await images.hasAny(n)) ? ['images'] : []) });
  // the collector's write barrier: image writes wait while it reads the records (@berth/bus gc.ts)
  const barrier = await collectionBarrier(env.nc, env.node, env.config.services, db);
  images = new Images(barrier.gate(db), outbox, nowTimestamp, guard);
  changes.reset();
  const bus = await BusServer.start(env.nc, { name: 'images', node: env.node, metadata: { plugins: JSON.stringify(plugins) }, changes, cacheable: ['Get', 'List'] });
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
      if (req.sync) await gcCollect(client, env.node, env.config.services);
      return {};
    },
  });
  const cfg = env.config.images;
  const auths = loadDockerConfig(cfg.registry_config);
  const backends = busBackends(client, env.node);
  warmCodecs(grpcService('berth.images.v1.Transfer').methods);
  await warmUpFetch().catch((e: Error) => log('images', `warm-up fetch: ${e.message}`));
  const transferConfig: PullerConfig = {
    registry: {
      plainHttp: (h) => cfg.plain_http.includes(h),
      mirrors: (h) => cfg.mirrors[h] ?? [],
      credentials: (h) => auths.get(h),
    },
    maxConcurrentDownloads: cfg.max_concurrent_downloads,
  };
  const puller = new Puller(
    backends,
    {
      // containerd's client: create, or replace the whole record when the name exists
      async put(n, img) {
        const rec = { ...img, created_at: null, updated_at: null, target: { ...img.target, annotations: {} } };
        for (;;) {
          try {
            await images.create(n, rec);
            return;
          } catch (e) {
            if (!isCode(e, Code.AlreadyExists)) throw e;
          }
          try {
            await images.update(n, rec, []);
            return;
          } catch (e) {
            if (!isCode(e, Code.NotFound)) throw e;
          }
        }
      },
    },
    transferConfig,
  );
  const pusher = new Pusher(backends, { get: (n, name) => images.get(n, name) }, transferConfig);
  const archiver = new Archiver(backends, { get: (n, name) => images.get(n, name) });
  const importer = new Importer(backends, {
    get: (n, name) => images.get(n, name),
    // containerd's client Import: the target updated, or the record created
    async putTarget(n, img) {
      const rec = { name: img.name, labels: img.labels, target: { ...img.target, annotations: img.target.annotations ?? {} }, created_at: null, updated_at: null };
      for (;;) {
        try {
          await images.update(n, rec, ['target']);
          return;
        } catch (e) {
          if (!isCode(e, Code.NotFound)) throw e;
        }
        try {
          await images.create(n, rec);
          return;
        } catch (e) {
          if (!isCode(e, Code.AlreadyExists)) throw e;
        }
      }
    },
  });
  serveTransfer(bus, env.nc, env.node, { puller, pusher, archiver, importer });
  guard.serve(bus);
  serveCollection(bus, barrier, { references: () => images.gcRecords() });
  return async () => {
    barrier.stop();
    outbox.stop();
    await bus.stop();
    await db.close();
  };
}
