// berth.images.v1.Transfer on the bus: Pull streams its progress to the caller and publishes the
// same messages on `berth.progress.<node>.<pull id>`, so any NATS subscriber can watch a pull.
import { randomBytes } from 'node:crypto';
import { codec, service as grpcService } from '@berth/api';
import { namespaceRequired, token, type BusServer, type StreamContext } from '@berth/bus';
import { invalidArgument } from '@berth/errdefs';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Puller } from './pull.js';
import type { Pusher } from './push.js';
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

export function serveTransfer(bus: BusServer, nc: NatsConnection, node: string, puller: Puller, pusher: Pusher): void {
  bus.serveGrpc(grpcService('berth.images.v1.Transfer'), {
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
