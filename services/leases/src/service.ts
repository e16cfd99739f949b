// The leases service on the bus: containerd's Leases API over the plain library. It owns every
// lease's resources: content (and later snapshots) record theirs through AddResource.
import { nowTimestamp, service as grpcService } from '@berth/api';
import { BusClient, BusServer, namespaceGuard, namespaceRequired, type CallContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import { Leases, type Resource } from './local.js';

export const plugins = [
  { type: 'io.containerd.grpc.v1', id: 'leases' },
  { type: 'io.containerd.lease.v1', id: 'manager' },
];

const ns = namespaceRequired;

export async function start(env: ServiceEnv): Promise<Stop> {
  const db = await openStore(env.root);
  const leases = new Leases(db, nowTimestamp);
  const client = new BusClient(env.nc);
  // leases keep no namespace from being deleted, but a lease makes its namespace exist and goes with it
  const guard = namespaceGuard(client, env.node, env.config.services, { kinds: async () => [], deleted: (n) => leases.purge(n) });
  const bus = await BusServer.start(env.nc, { name: 'leases', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.leases.v1.Leases'), {
    Create: async (req: { id: string; labels: Record<string, string> }, ctx: CallContext) => {
      const n = ns(ctx);
      return { lease: await guard.write(n, () => leases.create(n, req.id, req.labels ?? {})) };
    },
    Delete: async (req: { id: string }, ctx: CallContext) => {
      await leases.delete(ns(ctx), req.id);
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
  return async () => {
    await bus.stop();
    await db.close();
  };
}
