// The namespaces service on the bus: containerd's Namespaces API over the plain library.
import { service as grpcService } from '@berth/api';
import { BusClient, BusServer, eventPublisher, namespaceUsage, type CallContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import type { CreateNamespaceRequest__Output as CreateReq } from '@berth/api/types/containerd/services/namespaces/v1/CreateNamespaceRequest.js';
import type { DeleteNamespaceRequest__Output as DeleteReq } from '@berth/api/types/containerd/services/namespaces/v1/DeleteNamespaceRequest.js';
import type { GetNamespaceRequest__Output as GetReq } from '@berth/api/types/containerd/services/namespaces/v1/GetNamespaceRequest.js';
import type { UpdateNamespaceRequest__Output as UpdateReq } from '@berth/api/types/containerd/services/namespaces/v1/UpdateNamespaceRequest.js';
import { Namespaces } from './local.js';
import { NamespaceStore } from './store.js';

export const plugins = [{ type: 'io.containerd.grpc.v1', id: 'namespaces' }];

export async function start(env: ServiceEnv): Promise<Stop> {
  const db = await openStore(env.root);
  const client = new BusClient(env.nc);
  const ns = new Namespaces(
    new NamespaceStore(db),
    (name) => namespaceUsage(client, env.node, env.config.services, name),
    eventPublisher(env.nc, env.node),
  );
  const ctxNs = (ctx: CallContext) => ctx.namespace ?? 'default';
  const bus = await BusServer.start(env.nc, { name: 'namespaces', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.namespaces.v1.Namespaces'), {
    Get: async (req: GetReq) => ({ namespace: await ns.get(req.name) }),
    List: async () => ({ namespaces: await ns.list() }),
    Create: async (req: CreateReq, ctx: CallContext) => ({ namespace: await ns.create(req.namespace ?? { name: '', labels: {} }, ctxNs(ctx)) }),
    Update: async (req: UpdateReq, ctx: CallContext) => ({ namespace: await ns.update(req.namespace ?? { name: '', labels: {} }, req.update_mask?.paths ?? [], ctxNs(ctx)) }),
    Delete: async (req: DeleteReq) => {
      await ns.delete(req.name);
      return {};
    },
  });
  return async () => {
    await bus.stop();
    await db.close();
  };
}
