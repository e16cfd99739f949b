// The gc service: the node's collector and its scheduler. It reads every data-holding service's
// records under a write barrier (@berth/bus gc.ts), marks, and has content, snapshot and leases
// sweep what nothing references. Triggers: the services' write notices (deletions, mutations,
// containerd's thresholds), a timer, Berth's GC.Collect (`berth gc`) and synchronous lease deletes.
import { service as grpcService, toTimestamp } from '@berth/api';
import { BusClient, BusServer, gcCollectedSubject, gcMutatedSubject, rpcSubject } from '@berth/bus';
import { log, type ServiceEnv, type Stop } from '@berth/kit';
import { parseDuration } from './duration.js';
import { Collector, type CollectStats } from './local.js';
import { Scheduler } from './scheduler.js';

/** What `ctr plugins ls` shows for the collector in containerd 1.6.20. */
export const plugins = [{ type: 'io.containerd.gc.v1', id: 'scheduler' }];

/** The Collect answer (berth.gc.v1.CollectResponse) from a collection's figures. */
export function collectResponse(s: CollectStats) {
  return {
    epoch: s.epoch,
    started_at: toTimestamp(s.startedAt),
    duration_ns: Math.round(s.durationMs * 1e6),
    barrier_ns: Math.round(s.barrierMs * 1e6),
    marked: s.marked,
    content_removed: s.removed.content,
    blobs_removed: s.removed.blobs,
    ingests_removed: s.removed.ingests,
    snapshots_removed: s.removed.snapshots,
    leases_removed: s.removed.leases,
    bytes_freed: s.bytes,
  };
}

export async function start(env: ServiceEnv): Promise<Stop> {
  const c = env.config.gc;
  const client = new BusClient(env.nc);
  const collector = new Collector(
    async (svc, method, body, timeout) => JSON.parse(Buffer.from(await client.unary(rpcSubject(env.node, svc, method), Buffer.from(JSON.stringify(body)), {}, { timeout })).toString('utf8') || '{}'),
    { services: env.config.services, ttl: parseDuration(c.barrier_timeout, 'gc.barrier_timeout') },
  );
  const collect = async () => {
    const s = await collector.collect();
    const r = s.removed;
    log('gc', `collected ${s.epoch} in ${s.durationMs} ms (writes held ${s.barrierMs} ms): marked ${s.marked}; removed content ${r.content}, blobs ${r.blobs}, ingests ${r.ingests}, snapshots ${r.snapshots}, leases ${r.leases}; freed ${s.bytes} bytes`);
    if (!env.nc.isClosed()) env.nc.publish(gcCollectedSubject(env.node), JSON.stringify({ node: env.node, ...s }));
    return s;
  };
  const scheduler = new Scheduler(
    {
      pauseThreshold: c.pause_threshold,
      deletionThreshold: c.deletion_threshold,
      mutationThreshold: c.mutation_threshold,
      scheduleDelay: parseDuration(c.schedule_delay, 'gc.schedule_delay'),
      startupDelay: parseDuration(c.startup_delay, 'gc.startup_delay'),
      interval: parseDuration(c.interval, 'gc.interval'),
    },
    collect,
    (e) => log('gc', (e as Error).message),
  );
  // the services' write notices: plain messages, no reply (see collectionBarrier)
  const notices = env.nc.subscribe(gcMutatedSubject(env.node), {
    callback: (err, msg) => {
      if (err) return;
      try {
        const m = JSON.parse(msg.string()) as { mutations?: number; deletions?: number; ts?: number };
        scheduler.mutated(Number(m.mutations) || 0, Number(m.deletions) || 0, Number(m.ts) || Date.now());
      } catch {
        // not a notice
      }
    },
  });
  const bus = await BusServer.start(env.nc, { name: 'gc', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('berth.gc.v1.GC'), {
    Collect: async () => collectResponse(await scheduler.collectAndWait()),
  });
  scheduler.start();
  return async () => {
    scheduler.stop();
    notices.unsubscribe();
    await bus.stop();
  };
}
