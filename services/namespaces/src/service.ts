// The namespaces service on the bus: containerd's Namespaces API over the plain library, and
// `NamespaceEnsure` for the services that create namespaces implicitly (see @berth/bus usage.ts).
import { service as grpcService } from '@berth/api';
import { BusClient, BusServer, ChangeNotices, Outbox, releaseNamespace, sealNamespace, serveNamespaceEnsure, type CallContext } from '@berth/bus';
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
  // change notices for the gateway's read cache: Get and List are answered there until a record changes
  const changes = new ChangeNotices(env.nc, env.node, 'namespaces');
  const db = await openStore(env.root, { watch: changes });
  const client = new BusClient(env.nc);
  const outbox = await new Outbox(db, env.nc, { service: 'namespaces', node: env.node }).start();
  const services = env.config.services;
  const ns = new Namespaces(
    new NamespaceStore(db),
    {
      seal: (name) => sealNamespace(client, env.node, services, name),
      release: (name, deleted) => releaseNamespace(client, env.node, services, name, deleted),
    },
    outbox,
  );
  const ctxNs = (ctx: CallContext) => ctx.namespace ?? 'default';
  changes.reset();
  const bus = await BusServer.start(env.nc, { name: 'namespaces', node: env.node, metadata: { plugins: JSON.stringify(plugins) }, changes, cacheable: ['Get', 'List'] });
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
  serveNamespaceEnsure(bus, (name) => ns.ensure(name));
  return async () => {
    outbox.stop();
    await bus.stop();
    await db.close();
  };
}
