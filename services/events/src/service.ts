// The events service on the bus: containerd's Events API and Berth's Replay. (The JSON form of
// each event is published beside it by whoever stores it: @berth/bus storeEvent.)
import { service as grpcService, type Any } from '@berth/api';
import { BusServer, durationNs, ensureEventStream, type CallContext, type StreamContext } from '@berth/bus';
import type { ServiceEnv, Stop } from '@berth/kit';
import type { ForwardRequest__Output } from '@berth/api/types/containerd/services/events/v1/ForwardRequest.js';
import type { PublishRequest__Output } from '@berth/api/types/containerd/services/events/v1/PublishRequest.js';
import type { SubscribeRequest__Output } from '@berth/api/types/containerd/services/events/v1/SubscribeRequest.js';
import type { ReplayRequest__Output } from '@berth/api/types/berth/events/v1/ReplayRequest.js';
import type { Envelope } from '@berth/bus';
import { Events } from './local.js';

export const plugins = [
  { type: 'io.containerd.grpc.v1', id: 'events' },
  { type: 'io.containerd.event.v1', id: 'exchange' },
];

export async function start(env: ServiceEnv): Promise<Stop> {
  await ensureEventStream(env.nc, { maxAgeNs: durationNs(env.config.events.max_age), maxBytes: env.config.events.max_bytes });
  const events = new Events({ nc: env.nc, node: env.node });
  const bus = await BusServer.start(env.nc, { name: 'events', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.events.v1.Events'), {
    Publish: async (req: PublishRequest__Output, ctx: CallContext) => {
      await events.publish(ctx.namespace, req.topic, req.event as Any | null);
      return {};
    },
    Forward: async (req: ForwardRequest__Output) => {
      await events.forward(req.envelope as unknown as Envelope | null);
      return {};
    },
    Subscribe: (req: SubscribeRequest__Output, ctx: StreamContext, send: (b: Uint8Array) => Promise<void>) => events.subscribe(req.filters ?? [], ctx.signal, send),
  });
  bus.serveGrpc(grpcService('berth.events.v1.Replay'), {
    Replay: (req: ReplayRequest__Output, ctx: StreamContext, send: (r: unknown) => Promise<void>) =>
      events.replay({ filters: req.filters, since_seq: Number(req.since_seq), since_time: req.since_time as never, follow: req.follow }, ctx.signal, send),
    Info: () => events.info(),
  });
  return async () => {
    await bus.stop();
  };
}
