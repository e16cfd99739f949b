// containerd's gRPC API on a unix socket. Every method of every containerd service is
// registered; the ones of a service that does not run answer Unavailable at once (the bus has
// no responders), so a client never hangs on a missing service.
import { chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { codec, services, service as grpcService, type MethodInfo } from '@berth/api';
import { BusClient, decodeMessage, rpcSubject } from '@berth/bus';
import { BerthError, Code } from '@berth/errdefs';
import { parseAll } from '@berth/filters';
import type { NatsConnection } from '@nats-io/nats-core';
import { Svcm } from '@nats-io/services';
import { forwarder, passthrough, status, unaryRoute, type Forward } from './forward.js';
import { takeUnaryRoutes, type Route, type StreamHandler } from './lean.js';
import { contentRead, contentReadPath } from './contentread.js';
import { openWindows } from './windows.js';
import { seedsByPath } from './seeds.js';
import { carriersByPath } from './carry.js';
import { ReadCache, defaultReadCacheOptions, type ReadCacheOptions } from './readcache.js';
import { discoverPlugins, serverUuid, type PluginInfo } from './introspection.js';
import { local, owners } from './routes.js';
import { subscribeHandler, subscribePath } from './subscribe.js';

export const version = '1.6.20+berth.0.1.0';
export const revision = 'berth';

export const ownPlugins: PluginInfo[] = [
  { type: 'io.containerd.grpc.v1', id: 'introspection' },
  { type: 'io.containerd.grpc.v1', id: 'version' },
  { type: 'io.containerd.grpc.v1', id: 'healthcheck' },
];

export interface GatewayOptions {
  nc: NatsConnection;
  node: string;
  address: string;
  /** octal mode of the socket file */
  mode: number;
  /** owner and group of the socket file (containerd's [grpc] uid and gid); default root */
  uid?: number;
  gid?: number;
  /** where the server UUID is kept */
  root: string;
  maxRecv: number;
  maxSend: number;
  /** the read cache (readcache.ts); false: every call goes to the bus (BERTH_GATEWAY_CACHE=0) */
  readCache?: ReadCacheOptions | false;
}

type Handler = (req: any) => Promise<Record<string, unknown>> | Record<string, unknown>;

/** A method the gateway answers itself: decode, run, encode. */
function own(m: MethodInfo, fn: Handler): grpc.handleUnaryCall<Buffer, Buffer> {
  const req = codec(m.requestType);
  const res = codec(m.responseType);
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(decodeMessage(req, call.request)))
      .then(
        (r) => cb(null, Buffer.from(res.encode(r))),
        (e) => cb(status(e)),
      );
  };
}

export async function startGateway(o: GatewayOptions): Promise<{ server: grpc.Server; cache?: ReadCache; stop(): Promise<void> }> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': o.maxRecv,
    'grpc.max_send_message_length': o.maxSend,
    // channelz's per-call bookkeeping is for its own debugging service, which Berth does not serve
    'grpc.enable_channelz': 0,
  });
  const bus = new BusClient(o.nc);
  // the forwarded unary calls, for lean.ts once the socket is bound
  const unaryRoutes = new Map<string, Route>();
  // Content.Read, answered on node:http2 directly too (leanstream.ts)
  const streamRoutes = new Map<string, StreamHandler>();
  const cacheOpts = o.readCache ?? (process.env.BERTH_GATEWAY_CACHE === '0' ? false : defaultReadCacheOptions);
  const cache = cacheOpts ? new ReadCache(o.nc, o.node, cacheOpts) : undefined;
  const seeds = seedsByPath();
  const carriers = cache ? carriersByPath(cache) : new Map<string, (r: Route) => Route>();

  for (const svc of services) {
    if (local.has(svc.fullName)) continue;
    const owner = owners[svc.fullName];
    if (!owner) continue;
    const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
    const impl: grpc.UntypedServiceImplementation = {};
    for (const m of svc.methods) {
      def[m.name] = passthrough(m);
      const subject = rpcSubject(o.node, owner, m.name);
      let route: Route | undefined;
      if (!m.requestStream && !m.responseStream) {
        const plain = unaryRoute(bus, m, subject);
        route = cache ? cache.route(owner, m.path, plain, seeds.get(m.path)) : plain;
        route = carriers.get(m.path)?.(route) ?? route;
        unaryRoutes.set(m.path, route);
      }
      const forward = forwarder(bus, m, subject, route);
      // a Read's bytes come from the blob's file on this node (contentread.ts)
      if (m.path === contentReadPath) {
        const blobPath = rpcSubject(o.node, owner, 'BlobPath');
        const plain: Forward = (body, ctx, onCancel, onReply) => bus.unary(blobPath, body, ctx, { onCancel, onReply });
        impl[m.name] = contentRead(cache ? cache.route(owner, `${svc.fullName}/BlobPath`, plain) : plain, forward as grpc.handleServerStreamingCall<Buffer, Buffer>);
        streamRoutes.set(m.path, impl[m.name] as unknown as StreamHandler);
      } else if (m.path === subscribePath) impl[m.name] = subscribeHandler({ nc: o.nc, node: o.node });
      else impl[m.name] = forward;
    }
    server.addService(def, impl);
  }

  const uuid = serverUuid(o.root);
  const ownService = (name: string, handlers: Record<string, Handler>) => {
    const svc = grpcService(name);
    const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
    const impl: grpc.UntypedServiceImplementation = {};
    for (const m of svc.methods) {
      def[m.name] = passthrough(m);
      impl[m.name] = own(m, handlers[m.name] ?? (() => Promise.reject(new BerthError(Code.Unimplemented, `${m.path} not implemented`))));
    }
    server.addService(def, impl);
  };
  ownService('containerd.services.version.v1.Version', { Version: () => ({ version, revision }) });
  ownService('containerd.services.introspection.v1.Introspection', {
    Plugins: async (req: { filters: string[] }) => {
      const filter = parseAll(req.filters ?? []);
      // the gateway lists itself on the bus too: one entry per plugin
      const byKey = new Map([...ownPlugins, ...(await discoverPlugins(o.nc, o.node))].map((p) => [`${p.type}/${p.id}`, p]));
      const all = [...byKey.values()].sort((a, b) => (a.type + a.id).localeCompare(b.type + b.id));
      const plugins = all.filter((p) => filter.match({ field: (path) => pluginField(p, path) }));
      return { plugins: plugins.map((p) => ({ requires: [], platforms: [], exports: {}, capabilities: [], ...p })) };
    },
    Server: () => ({ uuid }),
  });
  // listed by `$SRV.INFO` like every other process of the stack, with the plugins it serves
  const svc = await new Svcm(o.nc).add({ name: 'berth-gateway', version, description: 'containerd gRPC API', metadata: { node: o.node, plugins: JSON.stringify(ownPlugins), address: o.address } });
  const health = new HealthImplementation({ '': 'SERVING' });
  health.addToServer(server);

  mkdirSync(dirname(o.address), { recursive: true });
  // a socket file left by a gateway that died is ours to replace; one that answers is not
  if (await answers(o.address)) throw new Error(`${o.address}: another server is listening there`);
  rmSync(o.address, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${o.address}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  openWindows(server);
  if (process.env.BERTH_GATEWAY_LEAN !== '0' && !takeUnaryRoutes(server, unaryRoutes, { maxRecv: o.maxRecv, maxSend: o.maxSend }, streamRoutes)) console.warn('gateway: grpc-js serves every call (its HTTP/2 servers were not found)');
  // owner first, then mode: the socket is never open to a group it was not meant for
  chownSync(o.address, o.uid ?? 0, o.gid ?? 0);
  chmodSync(o.address, o.mode);
  return {
    server,
    cache,
    stop: () =>
      new Promise<void>((resolve) => {
        health.setStatus('', 'NOT_SERVING');
        cache?.close();
        void svc.stop();
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 3000).unref();
      }),
  };
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

function pluginField(p: PluginInfo, path: string[]): string | undefined {
  const [head, ...rest] = path;
  switch (head) {
    case 'type':
      return p.type;
    case 'id':
      return p.id;
    case 'capabilities':
      return rest.length ? undefined : (p.capabilities ?? []).join(',') || undefined;
    case 'platforms':
      return (p.platforms ?? []).map((x) => `${x.os}/${x.architecture}`).join(',') || undefined;
    default:
      return undefined;
  }
}
