// The diff service on the bus: containerd's Diff API over the plain library.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { codec, service as grpcService } from '@berth/api';
import { BusClient, BusServer, namespaceRequired, rpcSubject, type CallContext, type StreamContext } from '@berth/bus';
// the client alone: the package's index brings the content store's library (RocksDB among it)
import { blobFile } from '@berth/content/client';
import { Code, isCode } from '@berth/errdefs';
import { log, type ServiceEnv, type Stop } from '@berth/kit';
import { IdleTrim, type MountSpec } from '@berth/native';
import { Differ, ingestFilePayload, lowersPendingPayload, type IngestSource, type BlobOpener, type ContentSink, type Descriptor } from './local.js';
import { warmUp } from './blobreader.js';
import { warmUpApply } from './warmup.js';

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

const writeRequest = codec('containerd.services.content.v1.WriteContentRequest');
const infoRequest = codec('containerd.services.content.v1.InfoRequest');
const infoResponse = codec<{ info: { digest: string; size: number; labels: Record<string, string> } }>('containerd.services.content.v1.InfoResponse');
const updateRequest = codec('containerd.services.content.v1.UpdateRequest');
const abortRequest = codec('containerd.services.content.v1.AbortRequest');

/** The content store of this node as Diff writes to it: containerd's Write, Info, Update and Abort over the bus. */
export function contentSink(bus: BusClient, node: string, ctx: CallContext): ContentSink {
  const subject = (m: string) => rpcSubject(node, 'content', m);
  return {
    async write(ref, data, finish) {
      const ch = await bus.open(subject('Write'), 'bidi', undefined, ctx);
      // answers are read beside the writes, so neither side waits on a full window
      const answers = (async () => {
        for await (const _ of ch);
      })();
      answers.catch(() => {});
      try {
        await ch.send(writeRequest.encode({ action: 'STAT', ref }));
        let offset = 0;
        for await (const chunk of data) {
          for (let at = 0; at < chunk.length; at += 1 << 20) {
            const part = chunk.subarray(at, at + (1 << 20));
            await ch.send(writeRequest.encode({ action: 'WRITE', ref, offset, data: part }));
            offset += part.length;
          }
        }
        const { digest, size, labels } = finish();
        await ch.send(writeRequest.encode({ action: 'COMMIT', ref, offset, total: size, expected: digest, labels }));
        ch.end();
      } catch (e) {
        ch.cancel(e);
        await answers.catch(() => {});
        throw e;
      }
      await answers;
    },
    async labels(digest) {
      const r = infoResponse.decode(await bus.unary(subject('Info'), infoRequest.encode({ digest }), ctx));
      return { size: r.info.size, labels: r.info.labels ?? {} };
    },
    async setLabel(digest, key, value) {
      await bus.unary(subject('Update'), updateRequest.encode({ info: { digest, labels: { [key]: value } }, update_mask: { paths: [`labels.${key}`] } }), ctx);
    },
    async abort(ref) {
      await bus.unary(subject('Abort'), abortRequest.encode({ ref }), ctx);
    },
  };
}

interface DiffRequest {
  left: MountSpec[];
  right: MountSpec[];
  media_type: string;
  ref: string;
  labels: Record<string, string>;
}

interface ApplyRequest {
  diff: Descriptor | null;
  mounts: MountSpec[];
  payloads?: Record<string, unknown>;
}

/** The ingest-file payload; one that does not parse names no file (the Apply answers Aborted). */
function parseIngest(value: Uint8Array): IngestSource {
  try {
    const v = JSON.parse(Buffer.from(value).toString('utf8')) as IngestSource;
    return { path: String(v.path ?? ''), ...(typeof v.diffId === 'string' ? { diffId: v.diffId } : {}) };
  } catch {
    return { path: '' };
  }
}

export async function start(env: ServiceEnv): Promise<Stop> {
  const client = new BusClient(env.nc);
  const differ = new Differ((m) => log('diff', m));
  // the reading thread starts now, and the apply path is compiled, rather than on the first
  // Apply, which is on a pull's critical path
  warmUp();
  await warmUpApply(differ).catch((e: Error) => log('diff', `warm-up apply: ${e.message}`));
  // what a pull's unpacking freed goes back to the system once layers stop coming (@berth/native memory.ts)
  const idle = new IdleTrim();
  const bus = await BusServer.start(env.nc, { name: 'diff', node: env.node, metadata: { plugins: JSON.stringify(plugins) } });
  bus.serveGrpc(grpcService('containerd.services.diff.v1.Diff'), {
    Apply: async (req: ApplyRequest, ctx: StreamContext) => {
      namespaceRequired(ctx);
      return idle.during(async () => {
        const desc = req.diff ?? { media_type: '', digest: '', size: 0 };
        const t0 = performance.now();
        const ingest = req.payloads?.[ingestFilePayload] as { value?: Uint8Array } | undefined;
        const applied = await differ.apply(blobOpener(client, env.node, ctx), desc, req.mounts ?? [], ctx.signal, !!req.payloads?.[lowersPendingPayload], ingest?.value ? parseIngest(ingest.value) : undefined);
        if (process.env.BERTH_DIFF_TRACE) log('diff', `diff applied d=${(performance.now() - t0).toFixed(1)}ms digest=${desc.digest} size=${desc.size}`);
        return { applied };
      });
    },
    Diff: async (req: DiffRequest, ctx: StreamContext) => {
      namespaceRequired(ctx);
      return idle.during(async () => ({
        diff: await differ.diff(req.left ?? [], req.right ?? [], { media_type: req.media_type, ref: req.ref, labels: req.labels }, contentSink(client, env.node, ctx)),
      }));
    },
  });
  return async () => {
    idle.stop();
    await bus.stop();
  };
}
