// The diff service on the bus: containerd's Diff API over the plain library.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { codec, service as grpcService } from '@berth/api';
import { BusClient, BusServer, namespaceRequired, rpcSubject, type CallContext, type StreamContext } from '@berth/bus';
import { blobFile } from '@berth/content';
import { Code, isCode } from '@berth/errdefs';
import { log, type ServiceEnv, type Stop } from '@berth/kit';
import type { MountSpec } from '@berth/native';
import { Differ, type BlobOpener, type Descriptor } from './local.js';

export const plugins = [
  { type: 'io.containerd.differ.v1', id: 'walking' },
  { type: 'io.containerd.service.v1', id: 'diff-service' },
  { type: 'io.containerd.grpc.v1', id: 'diff' },
];

const readRequest = codec('containerd.services.content.v1.ReadContentRequest');
const readResponse = codec<{ offset: number; data: Uint8Array }>('containerd.services.content.v1.ReadContentResponse');

/**
 * A blob's bytes: its file when this node's content service has it (the fast path, no copy over
 * NATS), else the content service's Read stream.
 */
export function blobOpener(bus: BusClient, node: string, ctx: CallContext): BlobOpener {
  return async (digest) => {
    try {
      const f = await blobFile(bus, node, digest, ctx);
      return { stream: createReadStream(f.path, { highWaterMark: 1 << 20 }), path: f.path };
    } catch (e) {
      if (!isCode(e, Code.Unavailable) && !isCode(e, Code.Unimplemented)) throw e;
    }
    const ch = await bus.open(rpcSubject(node, 'content', 'Read'), 'server', readRequest.encode({ digest }), ctx);
    const stream = Readable.from(
      (async function* () {
        for await (const m of ch) {
          const d = readResponse.decode(m).data;
          yield Buffer.from(d.buffer, d.byteOffset, d.byteLength);
        }
      })(),
      { objectMode: false },
    );
    return { stream };
  };
}

interface ApplyRequest {
  diff: Descriptor | null;
  mounts: MountSpec[];
}

export async function start(env: ServiceEnv): Promise<Stop> {
  const client = new BusClient(env.nc);
  const differ = new Differ((m) => log('diff', m));
  const bus = await BusServer.start(env.nc, { name: 'diff', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.diff.v1.Diff'), {
    Apply: async (req: ApplyRequest, ctx: StreamContext) => {
      namespaceRequired(ctx);
      const desc = req.diff ?? { media_type: '', digest: '', size: 0 };
      const t0 = performance.now();
      const applied = await differ.apply(blobOpener(client, env.node, ctx), desc, req.mounts ?? [], ctx.signal);
      if (process.env.BERTH_DIFF_TRACE) log('diff', `diff applied d=${(performance.now() - t0).toFixed(1)}ms digest=${desc.digest} size=${desc.size}`);
      return { applied };
    },
  });
  return async () => {
    await bus.stop();
  };
}
