// The leases service on the bus: containerd's Leases API over the plain library. It owns every
// lease's resources: content (and later snapshots) record theirs through AddResource.
import { nowTimestamp, service as grpcService } from '@berth/api';
import { BusClient, BusServer, collectionBarrier, gcCollect, namespaceGuard, namespaceRequired, serveCollection, type CallContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import { openStore, prefix } from '@berth/store';
import { Leases, type Resource } from './local.js';

export const plugins = [
  { type: 'io.containerd.grpc.v1', id: 'leases' },
  { type: 'io.containerd.lease.v1', id: 'manager' },
];

const ns = namespaceRequired;

export async function start(env: ServiceEnv): Promise<Stop> {
  const db = await openStore(env.root);
  // the collector's write barrier (@berth/bus gc.ts); a lease or a lease's resource deleted is
  // a deletion for its thresholds, as in containerd (leases have no events to tell it by)
  const gone = [prefix('lease'), prefix('res')];
  const barrier = await collectionBarrier(env.nc, env.node, env.config.services, db, {
    dirty: (ops) => ops.some((o) => o.type === 'del' && gone.some((p) => o.key.startsWith(p))),
  });
  const leases = new Leases(barrier.gate(db), nowTimestamp);
  const client = new BusClient(env.nc);
  // leases keep no namespace from being deleted, but a lease makes its namespace exist and goes with it
  const guard = namespaceGuard(client, env.node, env.config.services, { kinds: async () => [], deleted: (n) => leases.purge(n) });
  const bus = await BusServer.start(env.nc, { name: 'leases', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.leases.v1.Leases'), {
    Create: async (req: { id: string; labels: Record<string, string> }, ctx: CallContext) => {
      const n = ns(ctx);
      return { lease: await guard.write(n, () => leases.create(n, req.id, req.labels ?? {})) };
    },
    Delete: async (req: { id: string; sync?: boolean }, ctx: CallContext) => {
      await leases.delete(ns(ctx), req.id);
      // containerd's SynchronousDelete (`ctr leases rm --sync`): return after the collection that follows
      if (req.sync) await gcCollect(client, env.node, env.config.services);
      return {};
    },
    List: async (req: { filters: string[] }, ctx: CallContext) => ({ leases: await leases.list(ns(ctx), req.filters ?? []) }),
    AddResource: async (req: { id: string; resource: Resource | null }, ctx: CallContext) => {
      await leases.addResource(ns(ctx), req.id, req.resource ?? { id: '', type: '' });
      return {};
    },
    DeleteResource: async (req: { id: string; resource: Resource | null }, ctx: CallContext) => {
      await leases.deleteResource(ns(ctx), req.id, req.resource ?? { id: '', type: '' });
      return {};
    },
    ListResources: async (req: { id: string }, ctx: CallContext) => ({ resources: await leases.resources(ns(ctx), req.id) }),
  });
  guard.serve(bus);
  serveCollection(bus, barrier, {
    references: () => leases.gcRecords(),
    sweep: async (req, live) => ({ removed: { leases: await leases.collect(req.leases ?? [], live) }, bytes: 0 }),
  });
  return async () => {
    barrier.stop();
    await bus.stop();
    await db.close();
  };
}
