// The snapshot service on the bus: containerd's Snapshots API over the overlayfs and native
// snapshotters, the namespace-usage answer, and lease references for what is made under a lease.
import { join } from 'node:path';
import { nowTimestamp, service as grpcService } from '@berth/api';
import { BusClient, BusServer, ChangeNotices, collectionBarrier, jsonBytes, parseJson, leaseRefs, namespaceGuard, Outbox, serveCollection, unreadKeys, type CallContext, type StreamContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import { openStore } from '@berth/store';
import { Native, Overlay } from './drivers.js';
import { Snapshotter, type Info, type Labels } from './local.js';
import { Snapshotters } from './snapshots.js';

const platforms = [{ os: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch }];

/** What `ctr plugins ls` shows for snapshots in containerd 1.6.20. */
export function plugins(root: string) {
  return [
    { type: 'io.containerd.snapshotter.v1', id: 'native', platforms },
    { type: 'io.containerd.snapshotter.v1', id: 'overlayfs', platforms, exports: new Overlay(join(root, 'overlayfs')).exports },
    { type: 'io.containerd.service.v1', id: 'snapshots-service', requires: ['io.containerd.event.v1', 'io.containerd.metadata.v1'] },
    { type: 'io.containerd.grpc.v1', id: 'snapshots', requires: ['io.containerd.service.v1'] },
  ];
}

/** The bus method of Snapshotter.prepareOnPending (JSON: snapshotter, key, parent, pending, labels → mounts). */
export const prepareOnPendingMethod = 'PrepareOnPending';

// the List stream sends infos in blocks of this many, as containerd does
const listBlock = 100;

interface Req {
  snapshotter?: string;
  key?: string;
  parent?: string;
  name?: string;
  labels?: Labels;
}

export async function start(env: ServiceEnv): Promise<Stop> {
  // change notices for the gateway's read cache: Stat and Mounts (both from the record alone) are
  // answered there until a record changes
  // the id counters (`seq/...`) are read by no answer: a Prepare's taking an id leaves the copies alone
  const changes = new ChangeNotices(env.nc, env.node, 'snapshot', (k) => unreadKeys(k) || k.startsWith('seq/'));
  const db = await openStore(join(env.root, 'meta'), { watch: changes });
  const client = new BusClient(env.nc);
  const leases = env.config.services.includes('leases') ? { leases: leaseRefs(client, env.node) } : {};
  const outbox = await new Outbox(db, env.nc, { service: 'snapshot', node: env.node }).start();
  let all!: Snapshotters;
  const guard = namespaceGuard(client, env.node, env.config.services, { kinds: (ns) => all.kinds(ns) });
  const opts = { ...leases, guard };
  // the collector's write barrier: record writes wait while it reads the records (@berth/bus gc.ts)
  const barrier = await collectionBarrier(env.nc, env.node, env.config.services, db);
  const gated = barrier.gate(db);
  all = new Snapshotters([
    await new Snapshotter(new Overlay(join(env.root, 'overlayfs')), gated, outbox, nowTimestamp, opts).open(),
    await new Snapshotter(new Native(join(env.root, 'native')), gated, outbox, nowTimestamp, opts).open(),
  ]);
  const sn = (r: Req) => all.get(r.snapshotter);
  // Stat and Mounts answer from the snapshot's record alone, as Prepare's and View's answers do
  // (kept as Mounts): the gateway keeps them until that record changes, not any record
  const reads = (r: Req, ctx: CallContext) => {
    const s = sn(r);
    if (ctx.namespace) ctx.readsRecord = s.recKey(ctx.namespace, r.key ?? '');
    return s;
  };
  changes.reset();
  const bus = await BusServer.start(env.nc, { name: 'snapshot', node: env.node, metadata: { plugins: JSON.stringify(plugins(env.root)) }, changes, cacheable: ['Stat', 'Mounts'], seeds: ['Prepare', 'View'] });
  bus.serveGrpc(grpcService('containerd.services.snapshots.v1.Snapshots'), {
    Prepare: async (r: Req, ctx: CallContext) => ({ mounts: await reads(r, ctx).prepare(ctx, r.key ?? '', r.parent ?? '', r.labels ?? {}) }),
    View: async (r: Req, ctx: CallContext) => ({ mounts: await reads(r, ctx).view(ctx, r.key ?? '', r.parent ?? '', r.labels ?? {}) }),
    Mounts: async (r: Req, ctx: CallContext) => ({ mounts: await reads(r, ctx).mounts(ctx, r.key ?? '') }),
    Commit: async (r: Req, ctx: CallContext) => {
      await sn(r).commit(ctx, r.name ?? '', r.key ?? '', r.labels ?? {});
      return {};
    },
    Remove: async (r: Req, ctx: CallContext) => {
      await sn(r).remove(ctx, r.key ?? '');
      return {};
    },
    Stat: async (r: Req, ctx: CallContext) => ({ info: await reads(r, ctx).stat(ctx, r.key ?? '') }),
    Update: async (r: Req & { info?: Partial<Info>; update_mask?: { paths?: string[] } | null }, ctx: CallContext) => ({
      info: await sn(r).update(ctx, r.info ?? {}, r.update_mask?.paths ?? []),
    }),
    List: async (r: Req & { filters?: string[] }, ctx: StreamContext, send: (m: unknown) => Promise<void>) => {
      const infos = await sn(r).list(ctx, r.filters ?? []);
      for (let i = 0; i < infos.length; i += listBlock) await send({ info: infos.slice(i, i + listBlock) });
    },
    Usage: async (r: Req, ctx: CallContext) => sn(r).usage(ctx, r.key ?? ''),
    Cleanup: async (r: Req) => {
      await sn(r).cleanup();
      return {};
    },
  });
  // JSON in and out: Berth's own pull on this node (images), not part of containerd's API
  bus.raw(
    prepareOnPendingMethod,
    async (data, ctx) => {
      const r = parseJson<Req & { pending?: string }>(data);
      return jsonBytes({ mounts: await sn(r).prepareOnPending(ctx, r.key ?? '', r.parent ?? '', r.pending ?? '', r.labels ?? {}) });
    },
    { json: 'true' },
  );
  guard.serve(bus);
  serveCollection(bus, barrier, {
    references: async () => ({ snapshots: (await Promise.all(all.all().map((s) => s.gcRecords()))).flat() }),
    sweep: async (req, live) => {
      let removed = 0;
      let bytes = 0;
      for (const s of all.all()) {
        const r = await s.collect((req.snapshots ?? []).filter((x) => x.snapshotter === s.name), live);
        removed += r.removed;
        bytes += r.bytes;
      }
      return { removed: { snapshots: removed }, bytes };
    },
  });
  return async () => {
    barrier.stop();
    outbox.stop();
    await bus.stop();
    await db.close();
  };
}
