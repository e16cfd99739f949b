// The tasks service on the bus: containerd's Tasks API over shims, the ttrpc endpoint shims
// forward their events to, and the resident shim host kept warm.
import { join } from 'node:path';
import { codec, fromAny, service as grpcService } from '@berth/api';
import { BusClient, BusServer, ChangeNotices, namespaceGuard, namespaceRequired, Outbox, rpcSubject, type CallContext, type StreamContext } from '@berth/bus';
import { log, type ServiceEnv, type Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import { TtrpcServer, serveService, type ServerContext } from '@berth/ttrpc';
import { InOrder } from './inorder.js';
import { Bundles } from './bundle.js';
import { ShimHost } from './host.js';
import { Tasks, type Container, type Mount, type Peers } from './local.js';

export const plugins = [
  { type: 'io.containerd.runtime.v2', id: 'task' },
  { type: 'io.containerd.runtime.v1', id: 'linux' },
  { type: 'io.containerd.service.v1', id: 'tasks-service' },
  { type: 'io.containerd.grpc.v1', id: 'tasks' },
];

const ns = namespaceRequired;

const getContainer = {
  req: codec('containerd.services.containers.v1.GetContainerRequest'),
  res: codec<{ container: Container }>('containerd.services.containers.v1.GetContainerResponse'),
};
const getMounts = {
  req: codec('containerd.services.snapshots.v1.MountsRequest'),
  res: codec<{ mounts: Mount[] }>('containerd.services.snapshots.v1.MountsResponse'),
};

/** The container's record the gateway took along (CallContext.container), when it is this task's. */
function carried(ctx: CallContext, id: string): Container | undefined {
  if (!ctx.container) return undefined;
  try {
    const c = getContainer.res.decode(Buffer.from(ctx.container, 'base64')).container;
    return c?.id === id ? c : undefined;
  } catch {
    return undefined; // asked for as without it
  }
}

function peers(client: BusClient, node: string): Peers {
  return {
    async container(namespace, id) {
      const res = await client.unary(rpcSubject(node, 'containers', 'Get'), getContainer.req.encode({ id }), { namespace }, { timeout: 10_000 });
      return getContainer.res.decode(res).container;
    },
    async mounts(namespace, snapshotter, key) {
      const res = await client.unary(rpcSubject(node, 'snapshot', 'Mounts'), getMounts.req.encode({ snapshotter, key }), { namespace }, { timeout: 10_000 });
      return getMounts.res.decode(res).mounts;
    },
  };
}

/** Where shims forward events: containerd's `<address>.ttrpc`, beside the gateway's socket. */
export function eventsAddress(env: ServiceEnv): string {
  return `${env.config.grpc.address}.ttrpc`;
}

export async function start(env: ServiceEnv): Promise<Stop> {
  const say = (m: string) => log('tasks', m);
  // change notices for the gateway's read cache, which answers a Get of a task it saw deleted
  // (NotFound, seeds.ts) until the tasks change: only task records count, not the event marks
  const changes = new ChangeNotices(env.nc, env.node, 'tasks', (k) => !k.startsWith('task/'));
  const db = await openStore(env.root, { watch: changes });
  const outbox = await new Outbox(db, env.nc, { service: 'tasks', node: env.node }).start();
  const client = new BusClient(env.nc);
  const shimEnv = { address: env.config.grpc.address, ttrpcAddress: eventsAddress(env) };
  const wantsHost = Object.values(env.config.tasks.runtimes).includes('berth');
  if (wantsHost && !ShimHost.available()) say('Berth\'s shim host is not built (shim/dist/main.js): runtimes set to "berth" run the stock shim');
  const host = wantsHost && ShimHost.available() ? new ShimHost({ dir: join(env.config.state, 'shim'), ...shimEnv, node: env.node, log: say }) : undefined;
  const tasks = new Tasks({
    store: db,
    outbox,
    bundles: new Bundles(join(env.config.state, 'tasks'), join(env.root, 'work')),
    host,
    runtimes: env.config.tasks.runtimes,
    shimEnv,
    peers: peers(client, env.node),
    log: say,
  });

  // the events endpoint first: shims that kept running may have exits to hand over
  const events = new TtrpcServer();
  // each connection's forwards committed in the order they came (inorder.ts)
  const connections = new WeakMap<object, InOrder>();
  serveService(events, grpcService('containerd.services.events.ttrpc.v1.Events'), {
    Forward: async (req: any, ctx: ServerContext) => {
      const env = req.envelope;
      let event: Record<string, unknown> | undefined;
      try {
        event = fromAny(env.event);
      } catch {
        event = undefined;
      }
      let inOrder = connections.get(ctx.connection);
      if (!inOrder) connections.set(ctx.connection, (inOrder = new InOrder()));
      await inOrder.run(() => tasks.forwarded(env, event));
    },
  });
  await events.listen(shimEnv.ttrpcAddress);

  const t0 = performance.now();
  const { served, sweep } = await tasks.recover();
  say(`serving ${served} tasks again (${(performance.now() - t0).toFixed(1)} ms)`);
  void sweep;
  // kept warm: no process starts on the path of a create
  void host?.ensure().catch((e) => say(`shim host: ${(e as Error).message}`));

  // tasks hold no kind of their own in containerd's usage list (their containers do), but a
  // create keeps a concurrent namespace delete out
  const guard = namespaceGuard(client, env.node, env.config.services, { kinds: async () => [] });
  changes.reset();
  const bus = await BusServer.start(env.nc, { name: 'tasks', node: env.node, metadata: { plugins: JSON.stringify(plugins) }, changes, seeds: ['Delete'] });
  const handlers: Record<string, (req: any, ctx: StreamContext) => Promise<unknown>> = {
    Create: async (req: any, ctx: CallContext) => {
      const n = ns(ctx);
      return guard.write(n, () => tasks.create(n, req, carried(ctx, req.container_id)));
    },
    Start: async (req: any, ctx: CallContext) => tasks.start(ns(ctx), req.container_id, req.exec_id ?? ''),
    Delete: async (req: any, ctx: CallContext) => tasks.delete(ns(ctx), req.container_id),
    DeleteProcess: async (req: any, ctx: CallContext) => tasks.deleteProcess(ns(ctx), req.container_id, req.exec_id ?? ''),
    Get: async (req: any, ctx: CallContext) => ({ process: await tasks.getProcess(ns(ctx), req.container_id, req.exec_id ?? '') }),
    List: async (_req: any, ctx: CallContext) => ({ tasks: await tasks.list(ns(ctx)) }),
    Kill: async (req: any, ctx: CallContext) => {
      await tasks.kill(ns(ctx), req.container_id, req.exec_id ?? '', req.signal, !!req.all);
      return {};
    },
    Exec: async (req: any, ctx: CallContext) => {
      await tasks.exec(ns(ctx), req);
      return {};
    },
    ResizePty: async (req: any, ctx: CallContext) => {
      await tasks.resizePty(ns(ctx), req.container_id, req.exec_id ?? '', req.width, req.height);
      return {};
    },
    CloseIO: async (req: any, ctx: CallContext) => {
      await tasks.closeIO(ns(ctx), req.container_id, req.exec_id ?? '', !!req.stdin);
      return {};
    },
    Pause: async (req: any, ctx: CallContext) => {
      await tasks.pause(ns(ctx), req.container_id);
      return {};
    },
    Resume: async (req: any, ctx: CallContext) => {
      await tasks.resume(ns(ctx), req.container_id);
      return {};
    },
    ListPids: async (req: any, ctx: CallContext) => tasks.listPids(ns(ctx), req.container_id),
    Checkpoint: async (req: any, ctx: CallContext) => tasks.checkpoint(ns(ctx), req.container_id, req.options ?? null),
    Update: async (req: any, ctx: CallContext) => {
      await tasks.update(ns(ctx), req.container_id, req.resources ?? null, req.annotations ?? {});
      return {};
    },
    Metrics: async (req: any, ctx: CallContext) => tasks.metrics(ns(ctx), req.filters ?? []),
    Wait: async (req: any, ctx: StreamContext) => tasks.wait(ns(ctx), req.container_id, req.exec_id ?? '', ctx.signal),
  };
  // BERTH_TASKS_TRACE=1: each call's time in the log (where a run's latency goes)
  if (process.env.BERTH_TASKS_TRACE) {
    for (const [name, h] of Object.entries(handlers)) {
      handlers[name] = async (req, ctx) => {
        const t = performance.now();
        try {
          return await h(req, ctx);
        } finally {
          say(`trace ${name} ${req.container_id ?? ''} ${(performance.now() - t).toFixed(1)} ms`);
        }
      };
    }
  }
  bus.serveGrpc(grpcService('containerd.services.tasks.v1.Tasks'), handlers);
  // the containers service says so before its Delete answers (services/containers/src/service.ts);
  // the body: the container's id, or nothing when the containers service starts (a delete it
  // committed just before a crash was never told)
  bus.raw('ContainerDeleted', async (data, ctx) => {
    if (data.length === 0) tasks.containersUnknown();
    else tasks.containerDeleted(ns(ctx), Buffer.from(data).toString('utf8'));
    // a deleted task's NotFound becomes its container's: what the gateway kept no longer holds
    changes.touch();
    return new Uint8Array();
  });
  // a notice missed while cut off from NATS: every task's container is looked up again
  void (async () => {
    for await (const s of env.nc.status()) if (s.type === 'disconnect' || s.type === 'reconnect') tasks.containersUnknown();
  })().catch(() => undefined);
  guard.serve(bus);
  return async () => {
    tasks.close();
    host?.close();
    await events.close({ timeoutMs: 1000 });
    outbox.stop();
    await bus.stop();
    await db.close();
  };
}
