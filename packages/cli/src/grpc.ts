// The gateway socket as ctr reaches it: one gRPC client per command, the namespace (and a lease)
// as metadata, containerd's codecs, and a failed call turned into the CLI's error.
import * as grpc from '@grpc/grpc-js';
import { codec, method } from '@berth/api';
import { CommandError, common } from './flags.js';

export { CommandError, common };

/** The same for docker's commands, whose `-a` means something else (`ps -a`: all). */
export const containerCommon = {
  address: { type: 'string', default: common.address.default },
  namespace: common.namespace,
} as const;

export function client(address: string): grpc.Client {
  return new grpc.Client(`unix:${address}`, grpc.credentials.createInsecure());
}

export function md(ns: string, lease?: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set('containerd-namespace', ns);
  if (lease) m.set('containerd-lease', lease);
  return m;
}

export const failed = (e: grpc.ServiceError) => new CommandError(e.details || e.message, 1, e.code);

export const isNotFound = (e: unknown) => e instanceof CommandError && e.code === grpc.status.NOT_FOUND;
export const isAlreadyExists = (e: unknown) => e instanceof CommandError && e.code === grpc.status.ALREADY_EXISTS;

export function unary<T = any>(c: grpc.Client, path: string, req: Record<string, unknown>, ns: string, lease?: string): Promise<T> {
  const m = method(path);
  const Req = codec(m.requestType);
  const Res = codec(m.responseType);
  return new Promise((resolve, reject) =>
    c.makeUnaryRequest(path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => Res.decode(b) as T, Req.encode(req), md(ns, lease), (err, res) => (err ? reject(failed(err)) : resolve(res!))),
  );
}

/** A server stream's messages, decoded, in order. */
export function stream<T = any>(c: grpc.Client, path: string, req: Record<string, unknown>, ns: string, each: (msg: T) => void): Promise<void> {
  const m = method(path);
  const Req = codec(m.requestType);
  const Res = codec<T>(m.responseType);
  return new Promise<void>((resolve, reject) => {
    const call = c.makeServerStreamRequest(m.path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, Req.encode(req), md(ns));
    call.on('data', (b: Buffer) => each(Res.decode(b)));
    call.on('error', (e: grpc.ServiceError) => reject(failed(e)));
    call.on('end', () => resolve());
  });
}
