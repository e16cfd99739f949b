// The containers service on the bus: containerd's Containers API over the plain library.
import { nowTimestamp, service as grpcService } from '@berth/api';
import { BusClient, BusServer, ChangeNotices, collectionBarrier, namespaceGuard, namespaceRequired, Outbox, rpcSubject, serveCollection, type CallContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import { Containers, type Container } from './local.js';

export const plugins = [
  { type: 'io.containerd.service.v1', id: 'containers-service' },
  { type: 'io.containerd.grpc.v1', id: 'containers' },
];

const ns = namespaceRequired;

export async function start(env: ServiceEnv): Promise<Stop> {
  // change notices for the gateway's read cache: Get and List are answered there until a record changes
  const changes = new ChangeNotices(env.nc, env.node, 'containers');
  const db = await openStore(env.root, { watch: changes });
  const outbox = await new Outbox(db, env.nc, { service: 'containers', node: env.node }).start();
  let containers!: Containers;
  // The tasks service knows a live task's container without asking (one lookup per task, not
  // one per call): it hears of a delete before the delete answers. When it cannot be reached it
  // is not running, or cut off from NATS, and then it forgets what it knew by itself.
  const client = new BusClient(env.nc);
  // At start (an empty id): a delete committed just before a crash was never told.
  const tasksHear = env.config.services.includes('tasks')
    ? (namespace: string, id: string) =>
        client.unary(rpcSubject(env.node, 'tasks', 'ContainerDeleted'), Buffer.from(id), namespace ? { namespace } : {}, { timeout: 10_000 }).then(
          () => undefined,
          () => undefined,
        )
    : async () => undefined;
  await tasksHear('', '');
  const guard = namespaceGuard(client, env.node, env.config.services, {
    kinds: async (n) => ((await containers.hasAny(n)) ? ['containers'] : []),
    deleted: (n) => containers.forget(n),
  });
  // the collector's write barrier: container writes wait while it reads the records (@berth/bus gc.ts)
  const barrier = await collectionBarrier(env.nc, env.node, env.config.services, db);
  containers = new Containers(barrier.gate(db), outbox, nowTimestamp, guard);
  changes.reset();
  const bus = await BusServer.start(env.nc, { name: 'containers', node: env.node, metadata: { plugins: JSON.stringify(plugins) }, changes, cacheable: ['Get', 'List'], seeds: ['Create'] });
  bus.serveGrpc(grpcService('containerd.services.containers.v1.Containers'), {
    Get: async (req: { id: string }, ctx: CallContext) => ({ container: await containers.get(ns(ctx), req.id) }),
    List: async (req: { filters: string[] }, ctx: CallContext) => ({ containers: await containers.list(ns(ctx), req.filters ?? []) }),
    // one container a message, as containerd sends them
    ListStream: async (req: { filters: string[] }, ctx: CallContext, send: (m: { container: Container }) => Promise<void>) => {
      for (const container of await containers.list(ns(ctx), req.filters ?? [])) await send({ container });
    },
    Create: async (req: { container: Container }, ctx: CallContext) => ({ container: await containers.create(ns(ctx), req.container) }),
    Update: async (req: { container: Container; update_mask: { paths: string[] } | null }, ctx: CallContext) => ({
      container: await containers.update(ns(ctx), req.container, req.update_mask?.paths ?? []),
    }),
    Delete: async (req: { id: string }, ctx: CallContext) => {
      const n = ns(ctx);
      await containers.delete(n, req.id);
      await tasksHear(n, req.id);
      return {};
    },
  });
  guard.serve(bus);
  serveCollection(bus, barrier, { references: () => containers.gcRecords() });
  return async () => {
    barrier.stop();
    outbox.stop();
    await bus.stop();
    await db.close();
  };
}
