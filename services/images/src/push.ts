// Pushing an image of the store to a registry, as containerd's remotes.PushContent does it:
// children before parents (layers and config, then manifests, then the index), each blob only
// if the repository lacks it (HEAD), mounted from another repository of the same registry when
// the blob's distribution-source label names one (the registry copies it without the bytes),
// uploaded in one PUT otherwise; the root manifest or index last, under the tag.
import { PassThrough } from 'node:stream';
import { BerthError, Code, invalidArgument, notFound, toBerthError } from '@berth/errdefs';
import type { CallContext } from '@berth/bus';
import type { PullBackends } from './backends.js';
import { matches, parsePlatform, type Platform } from './platform.js';
import { Progress, type ProgressReport } from './progress.js';
import { limiter, fromJson, type JsonDescriptor, type PullerConfig } from './pull.js';
import { parseReference, type Reference } from './reference.js';
import { isIndex, isManifest, Registry, type Descriptor } from './registry.js';

export interface PushOptions {
  name: string;
  ref?: string;
  platforms?: string[];
  plainHttp?: boolean;
  username?: string;
  password?: string;
  maxConcurrentUploads?: number;
}

export interface ImageReader {
  get(ns: string, name: string): Promise<{ name: string; target: Descriptor }>;
}

export class Pusher {
  constructor(
    private readonly be: PullBackends,
    private readonly images: ImageReader,
    private readonly cfg: PullerConfig,
  ) {}

  async push(ns: string, o: PushOptions, onProgress: (r: ProgressReport) => void, signal?: AbortSignal): Promise<{ name: string; target: Descriptor }> {
    if (!o.name) throw invalidArgument('image name must not be empty');
    const img = await this.images.get(ns, o.name);
    const ref = parseReference(o.ref || o.name);
    const reg = new Registry(ref, {
      ...this.cfg.registry,
      mirrors: () => [],
      plainHttp: (h) => !!o.plainHttp || this.cfg.registry.plainHttp(h),
      credentials: (h) => (o.username ? { username: o.username, password: o.password ?? '' } : this.cfg.registry.credentials(h)),
    });
    const progress = new Progress(onProgress);
    const ctx: CallContext = { namespace: ns, signal };
    try {
      const run = new PushRun(this.be, reg, ref, ctx, progress, (o.platforms ?? []).filter(Boolean).map(parsePlatform), limiter(Math.max(1, o.maxConcurrentUploads || this.cfg.maxConcurrentDownloads)));
      progress.phase('pushing');
      await run.manifestOrIndex(img.target, true);
      progress.phase('done');
      return { name: ref.name, target: img.target };
    } catch (e) {
      throw signal?.aborted ? new BerthError(Code.Canceled, 'context canceled') : toBerthError(e);
    } finally {
      progress.stop();
    }
  }
}

class PushRun {
  private readonly blobs = new Map<string, Promise<void>>();
  /** containerd's distribution-source label key for this registry */
  private readonly sourceKey: string;

  constructor(
    private readonly be: PullBackends,
    private readonly reg: Registry,
    private readonly ref: Reference,
    private readonly ctx: CallContext,
    private readonly progress: Progress,
    private readonly wanted: Platform[],
    private readonly limit: ReturnType<typeof limiter>,
  ) {
    this.sourceKey = `containerd.io/distribution.source.${ref.host.replace(/:\d+$/, '')}`;
  }

  private async read(desc: Descriptor): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of await this.be.openBlob(this.ctx, desc.digest)) chunks.push(Buffer.from(c as Buffer));
    return Buffer.concat(chunks);
  }

  async manifestOrIndex(desc: Descriptor, root: boolean): Promise<void> {
    if (!(await this.be.info(this.ctx, desc.digest))) throw notFound(`content digest ${desc.digest}`);
    this.progress.add(desc.digest, desc.media_type, desc.size);
    const data = await this.read(desc);
    if (isIndex(desc.media_type)) {
      const manifests = ((JSON.parse(data.toString('utf8')) as { manifests?: JsonDescriptor[] }).manifests ?? []).map((m) => fromJson(m, `index ${desc.digest}`));
      const chosen: Descriptor[] = [];
      for (const m of manifests) {
        const wantedHere = this.wanted.length ? !m.platform || matches(this.wanted, m.platform) : !!(await this.be.info(this.ctx, m.digest));
        if (wantedHere) chosen.push(m);
      }
      await Promise.all(chosen.map((m) => this.manifestOrIndex(m, false)));
    } else if (isManifest(desc.media_type)) {
      const raw = JSON.parse(data.toString('utf8')) as { config?: JsonDescriptor; layers?: JsonDescriptor[] };
      const children = [fromJson(raw.config, `manifest ${desc.digest}`), ...(raw.layers ?? []).map((l) => fromJson(l, `manifest ${desc.digest}`))];
      await Promise.all(children.map((c) => this.blob(c)));
    } else {
      throw new BerthError(Code.Unimplemented, `${desc.digest}: media type ${desc.media_type} is not supported`);
    }
    // the root goes under the tag (or its digest), last: the image appears only once whole
    await this.reg.putManifest(root && this.ref.tag ? this.ref.tag : desc.digest, desc.media_type, data, this.ctx.signal);
    this.progress.state(desc.digest, 'uploaded');
  }

  private blob(desc: Descriptor): Promise<void> {
    let p = this.blobs.get(desc.digest);
    if (!p) {
      this.progress.add(desc.digest, desc.media_type, desc.size);
      p = this.limit(() => this.pushBlob(desc));
      this.blobs.set(desc.digest, p);
    }
    return p;
  }

  private async pushBlob(desc: Descriptor): Promise<void> {
    const signal = this.ctx.signal;
    const labels = await this.be.info(this.ctx, desc.digest);
    if (!labels) throw notFound(`content digest ${desc.digest}`);
    if (await this.reg.hasBlob(desc.digest, signal)) {
      this.progress.state(desc.digest, 'exists');
      return;
    }
    // a repository of this registry the blob came from: mounted there, no bytes sent
    const from = (labels[this.sourceKey] ?? '').split(',').find((r) => r && r !== this.ref.repository);
    const started = await this.reg.startUpload(desc.digest, from, signal);
    if (started === 'mounted') {
      this.progress.state(desc.digest, 'mounted');
      return;
    }
    this.progress.state(desc.digest, 'uploading');
    await this.reg.upload(
      started,
      desc,
      () => {
        let sent = 0;
        const s = this.be.openBlob(this.ctx, desc.digest);
        // openBlob is async: hand the request a stream at once and feed it when the blob is open
        const out = new PassThrough({ highWaterMark: 1 << 20 });
        s.then(
          (r) => {
            r.on('data', (c: Buffer) => {
              sent += c.length;
              this.progress.bytes(desc.digest, sent);
            });
            r.on('error', (e) => out.destroy(e as Error));
            r.pipe(out);
          },
          (e: unknown) => out.destroy(e as Error),
        );
        return out;
      },
      signal,
    );
    this.progress.state(desc.digest, 'uploaded');
  }
}
