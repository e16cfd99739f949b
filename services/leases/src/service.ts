// The leases service on the bus: containerd's Leases API over the plain library. Content
// written under a lease is recorded by the content service itself; ListResources shows both.
import { nowTimestamp, service as grpcService } from '@berth/api';
import { BusClient, BusServer, namespaceRequired, serveLeaseExists, type CallContext } from '@berth/bus';
import { leaseResources } from '@berth/content';
import { Code, isCode } from '@berth/errdefs';
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
  const bus = await BusServer.start(env.nc, { name: 'leases', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.leases.v1.Leases'), {
    Create: async (req: { id: string; labels: Record<string, string> }, ctx: CallContext) => ({ lease: await leases.create(ns(ctx), req.id, req.labels ?? {}) }),
    Delete: async (req: { id: string }, ctx: CallContext) => {
      await leases.delete(ns(ctx), req.id);
      return {};
    },
    List: async (req: { filters: string[] }, ctx: CallContext) => ({ leases: await leases.list(ns(ctx), req.filters ?? []) }),
    AddResource: async (req: { id: string; resource: Resource }, ctx: CallContext) => {
      await leases.addResource(ns(ctx), req.id, req.resource ?? { id: '', type: '' });
      return {};
    },
    DeleteResource: async (req: { id: string; resource: Resource }, ctx: CallContext) => {
      await leases.deleteResource(ns(ctx), req.id, req.resource ?? { id: '', type: '' });
      return {};
    },
    ListResources: async (req: { id: string }, ctx: CallContext) => {
      const own = await leases.resources(ns(ctx), req.id);
      let held: Resource[] = [];
      try {
        held = await leaseResources(client, env.node, req.id, { namespace: ns(ctx) });
      } catch (e) {
        if (!isCode(e, Code.Unavailable)) throw e; // no content service: only what was added here
      }
      const seen = new Set(own.map((r) => `${r.type}\u0000${r.id}`));
      return { resources: [...own, ...held.filter((r) => !seen.has(`${r.type}\u0000${r.id}`))] };
    },
  });
  serveLeaseExists(bus, (n, id) => leases.exists(n, id));
  return async () => {
    await bus.stop();
    await db.close();
  };
}
