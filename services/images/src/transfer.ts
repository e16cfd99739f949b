// berth.images.v1.Transfer on the bus: Pull streams its progress to the caller and publishes the
// same messages on `berth.progress.<node>.<pull id>`, so any NATS subscriber can watch a pull.
import { randomBytes } from 'node:crypto';
import { codec, service as grpcService } from '@berth/api';
import { namespaceRequired, token, type BidiStream, type BusServer, type StreamContext } from '@berth/bus';
import { invalidArgument } from '@berth/errdefs';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Puller } from './pull.js';
import type { Pusher } from './push.js';
import type { Archiver, Importer } from './archive.js';
import type { ProgressReport } from './progress.js';
import type { Descriptor } from './registry.js';

export interface PullRequest {
  ref: string;
  platforms: string[];
  all_platforms: boolean;
  plain_http: boolean;
  snapshotter: string;
  skip_unpack: boolean;
  labels: Record<string, string>;
  username: string;
  password: string;
  max_concurrent_downloads: number;
  pull_id: string;
}

/** Where a pull's progress goes on NATS. */
export function progressSubject(node: string, pullId: string): string {
  return `berth.progress.${token(node)}.${token(pullId)}`;
}

const progressCodec = codec('berth.images.v1.PullProgress');

export interface PushRequest {
  name: string;
  ref: string;
  platforms: string[];
  plain_http: boolean;
  username: string;
  password: string;
  max_concurrent_uploads: number;
  push_id: string;
}

/**
 * A transfer's progress reporter: each report goes on NATS and down the stream, in order, one at
 * a time; a slow reader skips to the latest. `done` waits for what is on its way.
 */
function reporter(nc: NatsConnection, node: string, given: string, send: (m: unknown) => Promise<void>) {
  const id = given || `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw invalidArgument(`transfer id "${id}" must be 1 to 64 of [A-Za-z0-9_-]`);
  const subject = progressSubject(node, id);
  const state: { name: string; target: Descriptor | null } = { name: '', target: null };
  let sending: Promise<void> = Promise.resolve();
  let latest: Record<string, unknown> | undefined;
  const emit = (r: ProgressReport) => {
    const m = { pull_id: id, status: r.status, layers: r.layers, name: state.name, target: state.target, subject };
    try {
      nc.publish(subject, progressCodec.encode(m));
    } catch {
      // progress on NATS is best effort: the transfer goes on without it
    }
    const idle = latest === undefined;
    latest = m;
    if (idle)
      sending = sending.then(async () => {
        while (latest) {
          const next = latest;
          latest = undefined;
          await send(next).catch(() => undefined);
        }
      });
  };
  return { state, emit, done: () => sending };
}

export interface ExportRequest {
  names: string[];
  platforms: string[];
  all_platforms: boolean;
  skip_manifest_json: boolean;
}

export interface ImportRequest {
  base_name: string;
  index_name: boolean;
  skip_unpack: boolean;
  snapshotter: string;
  platforms: string[];
  all_platforms: boolean;
  labels: Record<string, string>;
  data: Buffer;
}

export function serveTransfer(bus: BusServer, nc: NatsConnection, node: string, t: { puller: Puller; pusher: Pusher; archiver: Archiver; importer: Importer }): void {
  const { puller, pusher, archiver, importer } = t;
  bus.serveGrpc(grpcService('berth.images.v1.Transfer'), {
    Import: async (ctx: StreamContext, stream: BidiStream<ImportRequest>) => {
      const ns = namespaceRequired(ctx);
      const it = stream.recv()[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done) throw invalidArgument('no tarball sent');
      const opts = first.value;
      // the tarball: the first message's data, then every later message's
      const tarball = (async function* () {
        if (opts.data?.length) yield Buffer.from(opts.data);
        for (let n = await it.next(); !n.done; n = await it.next()) if (n.value.data?.length) yield Buffer.from(n.value.data);
      })();
      const rep = reporter(nc, node, '', (m) => stream.send(m));
      const imgs = await importer.import(
        ns,
        { baseName: opts.base_name, indexName: opts.index_name, skipUnpack: opts.skip_unpack, snapshotter: opts.snapshotter, platforms: opts.platforms, allPlatforms: opts.all_platforms, labels: opts.labels },
        tarball,
        rep.emit,
        ctx.signal,
      );
      // the last message names what was made, one per image
      for (const img of imgs) {
        rep.state.name = img.name;
        rep.state.target = img.target;
        rep.emit({ status: 'imported', layers: [] });
        await rep.done();
      }
      rep.state.name = '';
      rep.state.target = null;
      rep.emit({ status: 'done', layers: [] });
      await rep.done();
    },
    Export: async (req: ExportRequest, ctx: StreamContext, send: (m: unknown) => Promise<void>) => {
      const ns = namespaceRequired(ctx);
      // the tarball in messages of about 1 MiB
      let parts: Buffer[] = [];
      let n = 0;
      for await (const b of archiver.export(ns, { names: req.names ?? [], platforms: req.platforms, allPlatforms: req.all_platforms, skipManifestJson: req.skip_manifest_json }, ctx.signal)) {
        parts.push(b);
        n += b.length;
        if (n >= 1 << 20) {
          await send({ data: Buffer.concat(parts, n) });
          parts = [];
          n = 0;
        }
      }
      if (n) await send({ data: Buffer.concat(parts, n) });
    },
    Push: async (req: PushRequest, ctx: StreamContext, send: (m: unknown) => Promise<void>) => {
      const ns = namespaceRequired(ctx);
      const rep = reporter(nc, node, req.push_id, send);
      rep.state.name = req.ref || req.name;
      const result = await pusher.push(
        ns,
        { name: req.name, ref: req.ref, platforms: req.platforms, plainHttp: req.plain_http, username: req.username, password: req.password, maxConcurrentUploads: req.max_concurrent_uploads },
        rep.emit,
        ctx.signal,
      );
      rep.state.name = result.name;
      rep.state.target = result.target;
      rep.emit({ status: 'done', layers: [] });
      await rep.done();
    },
    Pull: async (req: PullRequest, ctx: StreamContext, send: (m: unknown) => Promise<void>) => {
      const ns = namespaceRequired(ctx);
      const rep = reporter(nc, node, req.pull_id, send);
      const state = rep.state;
      const emit = rep.emit;
      const result = await puller.pull(
        ns,
        {
          ref: req.ref,
          platforms: req.platforms,
          allPlatforms: req.all_platforms,
          plainHttp: req.plain_http,
          snapshotter: req.snapshotter,
          skipUnpack: req.skip_unpack,
          labels: req.labels,
          username: req.username,
          password: req.password,
          maxConcurrentDownloads: req.max_concurrent_downloads,
        },
        (r) => {
          if (r.status === 'fetching' && !state.name) state.name = req.ref;
          emit(r);
        },
        ctx.signal,
      );
      state.name = result.name;
      state.target = result.target;
      emit({ status: 'done', layers: [] });
      await rep.done();
    },
  });
}
