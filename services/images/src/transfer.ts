// berth.images.v1.Transfer on the bus: Pull streams its progress to the caller and publishes the
// same messages on `berth.progress.<node>.<pull id>`, so any NATS subscriber can watch a pull.
import { randomBytes } from 'node:crypto';
import { codec, service as grpcService } from '@berth/api';
import { namespaceRequired, token, type BusServer, type StreamContext } from '@berth/bus';
import { invalidArgument } from '@berth/errdefs';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Puller } from './pull.js';
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

export function serveTransfer(bus: BusServer, nc: NatsConnection, node: string, puller: Puller): void {
  bus.serveGrpc(grpcService('berth.images.v1.Transfer'), {
    Pull: async (req: PullRequest, ctx: StreamContext, send: (m: unknown) => Promise<void>) => {
      const ns = namespaceRequired(ctx);
      const pullId = req.pull_id || `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(pullId)) throw invalidArgument(`pull id "${pullId}" must be 1 to 64 of [A-Za-z0-9_-]`);
      const subject = progressSubject(node, pullId);
      let name = '';
      let target: Descriptor | null = null;
      // progress messages go out in order, one at a time; a slow reader skips to the latest
      let sending: Promise<void> = Promise.resolve();
      let latest: Record<string, unknown> | undefined;
      const emit = (r: ProgressReport) => {
        const m = { pull_id: pullId, status: r.status, layers: r.layers, name, target, subject };
        try {
          nc.publish(subject, progressCodec.encode(m));
        } catch {
          // progress on NATS is best effort: the pull goes on without it
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
          if (r.status === 'fetching' && !name) name = req.ref;
          emit(r);
        },
        ctx.signal,
      );
      name = result.name;
      target = result.target;
      emit({ status: 'done', layers: [] });
      await sending;
    },
  });
}
