// A plain gRPC client for tests: any containerd method by path, messages encoded with the
// containerd codecs, the namespace (and lease) as metadata — what a Go client sends.
import * as grpc from '@grpc/grpc-js';
import { codec, method } from '@berth/api';

export interface GrpcError {
  code: number;
  details: string;
}

const id = (b: Buffer) => b;

export function metadata(namespace?: string, lease?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (namespace !== undefined) md.set('containerd-namespace', namespace);
  if (lease !== undefined) md.set('containerd-lease', lease);
  return md;
}

/** Calls a unary method; resolves the decoded response, rejects with the status. */
export function unary(sock: string, path: string, req: Record<string, unknown>, md = new grpc.Metadata()): Promise<any> {
  const m = method(path);
  const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    c.makeUnaryRequest(path, id, id, Buffer.from(codec(m.requestType).encode(req)), md, { deadline: Date.now() + 20_000 }, (e, r) => {
      c.close();
      if (e) reject({ code: e.code, details: e.details } satisfies GrpcError);
      else resolve(codec(m.responseType).decode(r!));
    });
  });
}

/** `ok`, or `<code> <details>`: easy to compare between Berth and the reference. */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    const g = e as GrpcError;
    return `${g.code} ${g.details}`;
  }
}

/** One Write stream that commits `data` in a single message. */
export function writeBlob(sock: string, md: grpc.Metadata, ref: string, data: Buffer, expected: string): Promise<string> {
  const W = codec('containerd.services.content.v1.WriteContentRequest');
  const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
  return new Promise<string>((resolve) => {
    const call = c.makeBidiStreamRequest('/containerd.services.content.v1.Content/Write', id, id, md);
    call.on('data', () => undefined);
    call.on('error', (e: GrpcError) => resolve(`${e.code} ${e.details}`));
    call.on('end', () => resolve('ok'));
    call.write(Buffer.from(W.encode({ action: 'COMMIT', ref, total: data.length, expected, offset: 0, data })));
    call.end();
  }).finally(() => c.close());
}

/** Runs a garbage collection on a Berth stack and resolves once it is done. */
export function collect(sock: string): Promise<unknown> {
  return unary(sock, '/berth.gc.v1.GC/Collect', {});
}
