// Typed calls over @berth/api's descriptors: plain objects in and out, encoded with the
// service's own message codecs, so a shim or a shim client is written against field names
// rather than bytes.
import { codec, type MethodInfo, type ServiceInfo } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import type { CallOptions, TtrpcClient } from './client.js';
import type { ServerContext, TtrpcServer } from './server.js';

// Decoded messages are plain objects keyed by proto field names (see @berth/api's codec).
type Message = any;

export type TypedHandler = (request: Message, ctx: ServerContext) => Message | void | Promise<Message | void>;

function unaryMethods(info: ServiceInfo): MethodInfo[] {
  return info.methods.filter((m) => !m.requestStream && !m.responseStream);
}

/**
 * Registers the given handlers for a service; methods without one answer Unimplemented, as
 * Go's generated servers do. A handler returning nothing sends the empty response message.
 */
export function serveService(server: TtrpcServer, info: ServiceInfo, handlers: Record<string, TypedHandler>): void {
  const known = new Set(info.methods.map((m) => m.name));
  for (const name of Object.keys(handlers)) {
    if (!known.has(name)) throw new BerthError(Code.InvalidArgument, `${info.fullName} has no method ${name}`);
  }
  for (const m of unaryMethods(info)) {
    const handler = handlers[m.name];
    if (!handler) continue;
    const req = codec(m.requestType);
    const res = codec(m.responseType);
    server.register(info.fullName, m.name, async (bytes, ctx) => res.encode((await handler(req.decode(bytes), ctx)) ?? {}));
  }
  for (const m of info.methods) {
    if ((m.requestStream || m.responseStream) && handlers[m.name]) {
      throw new BerthError(Code.Unimplemented, `typed streaming handlers (${m.path}): use TtrpcServer.registerStream`);
    }
  }
}

export type TypedClient = Record<string, (request: Message, opts?: CallOptions) => Promise<Message>>;

/** One async function per unary method of the service, e.g. `task.State({ id })`. */
export function serviceClient(client: TtrpcClient, info: ServiceInfo): TypedClient {
  const out: TypedClient = {};
  for (const m of unaryMethods(info)) {
    const req = codec(m.requestType);
    const res = codec(m.responseType);
    out[m.name] = async (request, opts) => res.decode(await client.call(info.fullName, m.name, req.encode(request ?? {}), opts));
  }
  return out;
}
