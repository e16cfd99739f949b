// What a pull uses of the node's other services, over the bus with containerd's own messages:
// content (Info, Update, Write, Abort and the same-node IngestFile), snapshots (Stat, Prepare,
// Commit, Remove), diff (Apply) and leases (Create, Delete).
import { codec } from '@berth/api';
import { BusClient, rpcSubject, type CallContext } from '@berth/bus';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { blobFile, ingestFile, type IngestFile } from '@berth/content';
import { BerthError, Code, isCode } from '@berth/errdefs';
import type { Descriptor } from './registry.js';
import { ingestFilePayload, lowersPendingPayload, type IngestSource } from '@berth/diff';

// the snapshot service's prepareOnPendingMethod (services/snapshot/src/service.ts)
const prepareOnPendingMethod = 'PrepareOnPending';

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** The services a pull drives; `ctx` carries namespace, lease and cancellation. */
export interface PullBackends {
  info(ctx: CallContext, digest: string): Promise<Record<string, string> | undefined>;
  updateLabels(ctx: CallContext, digest: string, labels: Record<string, string>): Promise<void>;
  /** writes a small blob whole; false when the namespace had it already */
  writeBlob(ctx: CallContext, ref: string, desc: Descriptor, data: Uint8Array, labels: Record<string, string>): Promise<boolean>;
  ingest(ctx: CallContext, ref: string, desc: Descriptor): Promise<IngestFile>;
  /** commits an ingest filled through its file (content rehashes it) */
  commit(ctx: CallContext, ref: string, desc: Descriptor, labels: Record<string, string>): Promise<void>;
  abort(ctx: CallContext, ref: string): Promise<void>;
  snapshotExists(ctx: CallContext, snapshotter: string, key: string): Promise<boolean>;
  prepare(ctx: CallContext, snapshotter: string, key: string, parent: string): Promise<Mount[]>;
  /**
   * Prepares `key` on `parent` before `parent` is committed, stacked on the active snapshot
   * `pending` that becomes it (the snapshot service's PrepareOnPending, Berth's own).
   */
  prepareOnPending(ctx: CallContext, snapshotter: string, key: string, parent: string, pending: string): Promise<Mount[]>;
  commitSnapshot(ctx: CallContext, snapshotter: string, name: string, key: string): Promise<void>;
  removeSnapshot(ctx: CallContext, snapshotter: string, key: string): Promise<void>;
  /**
   * `lowersPending`: the mounts' lowerdirs are still being applied (a layer that needs them fails
   * with Aborted). `ingest`: the blob is not committed yet but being written to this ingest file
   * on the node; it is applied as it grows (any trouble: Aborted, nothing applied).
   */
  apply(ctx: CallContext, desc: Descriptor, mounts: Mount[], lowersPending?: boolean, ingest?: IngestSource): Promise<Descriptor>;
  /** a blob's bytes: its file on this node, else the content service's Read stream */
  openBlob(ctx: CallContext, digest: string): Promise<NodeJS.ReadableStream>;
  createLease(ctx: CallContext, labels: Record<string, string>): Promise<string>;
  deleteLease(ctx: CallContext, id: string): Promise<void>;
}

const c = {
  infoReq: codec('containerd.services.content.v1.InfoRequest'),
  infoRes: codec('containerd.services.content.v1.InfoResponse'),
  updateReq: codec('containerd.services.content.v1.UpdateRequest'),
  writeReq: codec('containerd.services.content.v1.WriteContentRequest'),
  abortReq: codec('containerd.services.content.v1.AbortRequest'),
  statReq: codec('containerd.services.snapshots.v1.StatSnapshotRequest'),
  prepareReq: codec('containerd.services.snapshots.v1.PrepareSnapshotRequest'),
  prepareRes: codec('containerd.services.snapshots.v1.PrepareSnapshotResponse'),
  commitReq: codec('containerd.services.snapshots.v1.CommitSnapshotRequest'),
  removeReq: codec('containerd.services.snapshots.v1.RemoveSnapshotRequest'),
  applyReq: codec('containerd.services.diff.v1.ApplyRequest'),
  applyRes: codec('containerd.services.diff.v1.ApplyResponse'),
  leaseCreateReq: codec('containerd.services.leases.v1.CreateRequest'),
  leaseCreateRes: codec('containerd.services.leases.v1.CreateResponse'),
  leaseDeleteReq: codec('containerd.services.leases.v1.DeleteRequest'),
  readReq: codec('containerd.services.content.v1.ReadContentRequest'),
  readRes: codec<{ offset: number; data: Uint8Array }>('containerd.services.content.v1.ReadContentResponse'),
};

/**
 * Compiles every codec a pull uses, and those of `methods` (protobufjs builds a type's encoder
 * and decoder on first use: about 30 ms of CPU that a pull would otherwise pay at its start).
 */
export function warmCodecs(methods: readonly { requestType: string; responseType: string }[] = []): void {
  const all = [...Object.values(c), ...methods.flatMap((m) => [codec(m.requestType), codec(m.responseType)])];
  for (const x of all) x.decode(x.encode({}));
}

const toDesc = (d: Descriptor) => ({ media_type: d.media_type, digest: d.digest, size: d.size, annotations: d.annotations ?? {} });

export function busBackends(bus: BusClient, node: string): PullBackends {
  const call = (svc: string, method: string, payload: Uint8Array, ctx: CallContext) => bus.unary(rpcSubject(node, svc, method), payload, ctx);

  /** A Write stream of `messages`; its errors thrown. */
  async function write(ctx: CallContext, messages: Record<string, unknown>[]): Promise<void> {
    const ch = await bus.open(rpcSubject(node, 'content', 'Write'), 'bidi', undefined, ctx);
    const drain = (async () => {
      for await (const m of ch) void m;
    })();
    try {
      for (const m of messages) await ch.send(c.writeReq.encode(m));
      ch.end();
    } catch (e) {
      ch.cancel(e);
    }
    await drain;
  }

  return {
    async info(ctx, digest) {
      try {
        const r = c.infoRes.decode(await call('content', 'Info', c.infoReq.encode({ digest }), ctx));
        return r.info.labels ?? {};
      } catch (e) {
        if (isCode(e, Code.NotFound)) return undefined;
        throw e;
      }
    },
    async updateLabels(ctx, digest, labels) {
      const paths = Object.keys(labels).map((k) => `labels.${k}`);
      if (!paths.length) return;
      await call('content', 'Update', c.updateReq.encode({ info: { digest, labels }, update_mask: { paths } }), ctx);
    },
    async writeBlob(ctx, ref, desc, data, labels) {
      try {
        await write(ctx, [{ action: 'COMMIT', ref, total: desc.size, expected: desc.digest, offset: 0, data, labels }]);
        return true;
      } catch (e) {
        if (isCode(e, Code.AlreadyExists)) return false;
        throw e;
      }
    },
    ingest: (ctx, ref, desc) => ingestFile(bus, node, ref, desc.size, desc.digest, ctx),
    async commit(ctx, ref, desc, labels) {
      await write(ctx, [{ action: 'COMMIT', ref, total: desc.size, expected: desc.digest, offset: desc.size, labels }]);
    },
    async abort(ctx, ref) {
      await call('content', 'Abort', c.abortReq.encode({ ref }), ctx).catch((e) => {
        if (!isCode(e, Code.NotFound)) throw e;
      });
    },
    async snapshotExists(ctx, snapshotter, key) {
      try {
        await call('snapshot', 'Stat', c.statReq.encode({ snapshotter, key }), ctx);
        return true;
      } catch (e) {
        if (isCode(e, Code.NotFound)) return false;
        throw e;
      }
    },
    async prepare(ctx, snapshotter, key, parent) {
      return c.prepareRes.decode(await call('snapshot', 'Prepare', c.prepareReq.encode({ snapshotter, key, parent }), ctx)).mounts;
    },
    async prepareOnPending(ctx, snapshotter, key, parent, pending) {
      const res = await call('snapshot', prepareOnPendingMethod, Buffer.from(JSON.stringify({ snapshotter, key, parent, pending })), ctx);
      return (JSON.parse(Buffer.from(res).toString('utf8')) as { mounts: Mount[] }).mounts;
    },
    async commitSnapshot(ctx, snapshotter, name, key) {
      await call('snapshot', 'Commit', c.commitReq.encode({ snapshotter, name, key }), ctx);
    },
    async removeSnapshot(ctx, snapshotter, key) {
      await call('snapshot', 'Remove', c.removeReq.encode({ snapshotter, key }), ctx);
    },
    async apply(ctx, desc, mounts, lowersPending, ingest) {
      const payloads: Record<string, { type_url: string; value: Uint8Array }> = {};
      if (lowersPending) payloads[lowersPendingPayload] = { type_url: lowersPendingPayload, value: new Uint8Array() };
      if (ingest) payloads[ingestFilePayload] = { type_url: ingestFilePayload, value: Buffer.from(JSON.stringify(ingest)) };
      return c.applyRes.decode(await call('diff', 'Apply', c.applyReq.encode({ diff: toDesc(desc), mounts, payloads }), ctx)).applied;
    },
    async openBlob(ctx, digest) {
      try {
        const f = await blobFile(bus, node, digest, ctx);
        return createReadStream(f.path, { highWaterMark: 1 << 20 });
      } catch (e) {
        if (!isCode(e, Code.Unavailable) && !isCode(e, Code.Unimplemented)) throw e;
      }
      const ch = await bus.open(rpcSubject(node, 'content', 'Read'), 'server', c.readReq.encode({ digest }), ctx);
      return Readable.from(
        (async function* () {
          for await (const m of ch) yield Buffer.from(c.readRes.decode(m).data);
        })(),
        { objectMode: false },
      );
    },
    async createLease(ctx, labels) {
      return c.leaseCreateRes.decode(await call('leases', 'Create', c.leaseCreateReq.encode({ id: '', labels }), ctx)).lease.id;
    },
    async deleteLease(ctx, id) {
      await call('leases', 'Delete', c.leaseDeleteReq.encode({ id }), ctx).catch((e) => {
        if (!isCode(e, Code.NotFound)) throw e;
      });
    },
  };
}

export { BerthError };
