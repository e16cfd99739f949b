// The server-side pull: what `ctr images pull` does through five services, done inside the
// images service, with the fetch and the unpack overlapping. Layers are fetched in parallel
// (straight into the content store's ingest files on this node) and each is unpacked as soon as
// it and the layers under it are in; containerd 1.6 fetches everything first. The result is the
// same as a `ctr pull`'s: the same blobs with containerd's labels (gc.ref.content.*,
// distribution.source.*, uncompressed, gc.ref.snapshot.*), the same committed snapshots (chain
// ids, made through `extract-<n>-<random> <chainid>` keys), the image record. Everything is
// written under a lease of its own, deleted once the image record exists; a pull that fails or
// is interrupted leaves the lease to expire (containerd.io/gc.expire), so what it wrote stays
// resumable by a retry until then and is collected after.
import { createHash, randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { BerthError, Code, invalidArgument, isCode, notFound, toBerthError } from '@berth/errdefs';
import type { CallContext } from '@berth/bus';
import type { PullBackends } from './backends.js';
import { formatPlatform, hostPlatform, matches, parsePlatform, type Platform } from './platform.js';
import { Progress, type ProgressReport } from './progress.js';
import { parseReference, type Reference } from './reference.js';
import { recycle } from './blobget.js';
import { isIndex, isManifest, Registry, type Descriptor, type RegistryOptions } from './registry.js';

export interface PullOptions {
  ref: string;
  platforms?: string[];
  allPlatforms?: boolean;
  plainHttp?: boolean;
  snapshotter?: string;
  skipUnpack?: boolean;
  labels?: Record<string, string>;
  username?: string;
  password?: string;
  maxConcurrentDownloads?: number;
}

export interface PullResult {
  name: string;
  target: Descriptor;
  /** the chain id of each unpacked platform's rootfs */
  unpacked: { platform: string; chainId: string }[];
}

export interface ImageWriter {
  /** creates the record, or replaces it as containerd's client does when it exists */
  put(ns: string, image: { name: string; labels: Record<string, string>; target: Descriptor }): Promise<void>;
}

const layerPrefixes = ['application/vnd.oci.image.layer.', 'application/vnd.docker.image.rootfs.'];
const configTypes = new Set(['application/vnd.docker.container.image.v1+json', 'application/vnd.oci.image.config.v1+json', 'application/octet-stream']);
export const isLayer = (mt: string) => layerPrefixes.some((p) => mt.startsWith(p));

/** containerd's remotes.MakeRefKey: the ingest ref of a blob. */
export function refKey(desc: Descriptor): string {
  const mt = desc.media_type;
  if (isManifest(mt)) return `manifest-${desc.digest}`;
  if (isIndex(mt)) return `index-${desc.digest}`;
  if (isLayer(mt)) return `layer-${desc.digest}`;
  if (configTypes.has(mt)) return `config-${desc.digest}`;
  return `unknown-${desc.digest}`;
}

/** containerd's images.ChildGCLabels, numbered as SetChildrenMappedLabels numbers them. */
export function childLabels(children: Descriptor[]): Record<string, string> {
  const out: Record<string, string> = {};
  const seen = new Map<string, number>();
  for (const ch of children) {
    const mt = ch.media_type;
    let key = configTypes.has(mt) ? 'containerd.io/gc.ref.content.config' : isManifest(mt) ? 'containerd.io/gc.ref.content.m.' : isLayer(mt) ? 'containerd.io/gc.ref.content.l.' : 'containerd.io/gc.ref.content.';
    const idx = seen.get(key) ?? 0;
    seen.set(key, idx + 1);
    if (idx > 0 || key.endsWith('.')) key = `${key}${idx}`;
    out[key] = ch.digest;
  }
  return out;
}

/** identity.ChainID: the snapshot name of a stack of layers. */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev ? `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}` : d);
  }
  return out;
}

/** containerd's unpack key: `extract-<nanoseconds>-<3 random bytes, base64url> <chain id>` */
function extractKey(chainId: string): string {
  const ns = Number(process.hrtime.bigint() % 1_000_000_000n);
  return `extract-${ns}-${randomBytes(3).toString('base64url')} ${chainId}`;
}

const tracing = !!process.env.BERTH_PULL_TRACE;
const t0 = performance.now();
const trace = (what: string) => {
  if (tracing) console.log(`pull trace ${(performance.now() - t0).toFixed(1)}ms ${what}`);
};

/** Go's time.RFC3339 in UTC, as containerd writes gc.expire. */
export const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d+Z$/, 'Z');

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason)), { once: true });
  });

/** A small semaphore: layers fetched at once. */
export function limiter(n: number) {
  let active = 0;
  const queue: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      return await fn();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}

interface ManifestDoc {
  config: Descriptor;
  layers: Descriptor[];
}

export interface JsonDescriptor {
  mediaType?: string;
  digest?: string;
  size?: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
  urls?: string[];
}

/** An OCI JSON descriptor (`mediaType`) as ours; one without digest or size is refused. */
export function fromJson(d: JsonDescriptor | undefined, where: string): Descriptor {
  if (!d || typeof d.digest !== 'string' || typeof d.size !== 'number' || typeof d.mediaType !== 'string') {
    throw new BerthError(Code.FailedPrecondition, `${where}: invalid descriptor ${JSON.stringify(d)}`);
  }
  return { media_type: d.mediaType, digest: d.digest, size: d.size, ...(d.annotations ? { annotations: d.annotations } : {}), ...(d.platform ? { platform: d.platform } : {}) };
}

export interface PullerConfig {
  registry: Omit<RegistryOptions, 'plainHttp' | 'credentials'> & {
    plainHttp(host: string): boolean;
    credentials(host: string): { username: string; password: string } | undefined;
  };
  maxConcurrentDownloads: number;
  /** how long a download may go without progress while the registry is retried */
  retryWindowMs?: number;
  leaseExpiryMs?: number;
}

export class Puller {
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(
    private readonly be: PullBackends,
    private readonly images: ImageWriter,
    private readonly cfg: PullerConfig,
  ) {}

  async pull(ns: string, o: PullOptions, onProgress: (r: ProgressReport) => void, signal?: AbortSignal): Promise<PullResult> {
    if (!o.ref) throw invalidArgument('ref must not be empty');
    const ref = parseReference(o.ref);
    const wanted: Platform[] = (o.platforms ?? []).filter(Boolean).map(parsePlatform);
    if (!wanted.length) wanted.push(hostPlatform());
    const snapshotter = o.snapshotter || 'overlayfs';
    const reg = new Registry(ref, {
      ...this.cfg.registry,
      plainHttp: (h) => !!o.plainHttp || this.cfg.registry.plainHttp(h),
      credentials: (h) => (o.username ? { username: o.username, password: o.password ?? '' } : this.cfg.registry.credentials(h)),
    });
    const progress = new Progress(onProgress);
    const abort = new AbortController();
    const onAbort = () => abort.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const leaseLabels = { 'containerd.io/gc.expire': rfc3339(new Date(Date.now() + (this.cfg.leaseExpiryMs ?? 24 * 3600_000))) };
    trace(`pull ${o.ref}`);
    const lease = await this.be.createLease({ namespace: ns, signal: abort.signal }, leaseLabels);
    const ctx: CallContext = { namespace: ns, lease, signal: abort.signal };
    try {
      const run = new PullRun(this.be, reg, ref, ctx, progress, {
        wanted,
        all: !!o.allPlatforms,
        snapshotter,
        unpack: !o.skipUnpack,
        limit: limiter(Math.max(1, o.maxConcurrentDownloads || this.cfg.maxConcurrentDownloads)),
        retryWindowMs: this.cfg.retryWindowMs ?? 30_000,
        inflight: this.inflight,
      }, abort);
      trace('lease');
      const result = await run.run();
      trace('run');
      await this.images.put(ns, { name: ref.name, labels: o.labels ?? {}, target: { media_type: result.target.media_type, digest: result.target.digest, size: result.target.size } });
      trace('image');
      progress.phase('done');
      await this.be.deleteLease({ namespace: ns }, lease);
      trace('lease deleted');
      return result;
    } catch (e) {
      abort.abort(e);
      throw signal?.aborted ? new BerthError(Code.Canceled, 'context canceled') : toBerthError(e);
    } finally {
      progress.stop();
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

interface RunOptions {
  /**
   * blobs being written by any pull of this process, by namespace and digest: a second pull of
   * the same blob waits for the first instead of appending to the same ingest file
   */
  inflight: Map<string, Promise<void>>;
  wanted: Platform[];
  all: boolean;
  snapshotter: string;
  unpack: boolean;
  limit: ReturnType<typeof limiter>;
  retryWindowMs: number;
}

/** One pull's state: the blobs in flight and the platforms to unpack. */
class PullRun {
  private readonly fetches = new Map<string, Promise<void>>();
  /** per layer: the ingest file its download is appending to, once it starts (undefined: none) */
  private readonly growing = new Map<string, ReturnType<typeof deferred<string | undefined>>>();
  /**
   * layers whose download wrote its last byte: their ingest file is about to be renamed into
   * the store by the commit, so an unpack that has not opened it yet takes the committed blob
   */
  private readonly written = new Set<string>();
  private readonly pending: Promise<unknown>[] = [];
  private readonly toUnpack: { platform: string; manifest: ManifestDoc; diffIds: string[] }[] = [];
  private readonly source: { key: string; repo: string };

  constructor(
    private readonly be: PullBackends,
    private readonly reg: Registry,
    private readonly ref: Reference,
    private readonly ctx: CallContext,
    private readonly progress: Progress,
    private readonly o: RunOptions,
    private readonly abort: AbortController,
  ) {
    // containerd keys the source by host name without the port
    const host = ref.host.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
    this.source = { key: `containerd.io/distribution.source.${host}`, repo: ref.repository };
  }

  /** Watches a background task: a failure fails the pull (and aborts the rest). */
  private track<T>(p: Promise<T>): Promise<T> {
    p.catch(() => undefined);
    this.pending.push(p);
    return p;
  }

  async run(): Promise<PullResult> {
    this.progress.phase('resolving');
    let target: Descriptor;
    try {
      target = await this.reg.resolve(this.ctx.signal);
    } catch (e) {
      throw toBerthError(e).wrap(`failed to resolve reference "${this.ref.name}"`);
    }
    trace('resolved');
    this.progress.phase('fetching');
    try {
      await this.handle(target, undefined);
      if (!this.toUnpack.length) throw notFound(`no match for platform in manifest ${target.digest}`);
      const unpacked: PullResult['unpacked'] = [];
      if (this.o.unpack) {
        for (const u of this.toUnpack) unpacked.push({ platform: u.platform, chainId: await this.unpack(u.manifest, u.diffIds) });
      }
      await Promise.all(this.pending);
    } catch (e) {
      // let what is in flight stop before answering, so nothing is written after the error
      this.abort.abort(e);
      await Promise.allSettled(this.pending);
      throw e;
    }
    return { name: this.ref.name, target, unpacked: this.toUnpack.map((u) => ({ platform: u.platform, chainId: chainIds(u.diffIds).at(-1) ?? '' })) };
  }

  /** The distribution source label with this repository added to what the blob has. */
  private async sourceLabel(digest: string, existing?: Record<string, string>): Promise<Record<string, string>> {
    const have = (existing ?? (await this.be.info(this.ctx, digest)) ?? {})[this.source.key];
    const repos = have ? have.split(',') : [];
    if (!repos.includes(this.source.repo)) repos.push(this.source.repo);
    return { [this.source.key]: repos.join(',') };
  }

  /** A manifest, index or config: fetched whole, stored with its labels; its bytes returned. */
  private async small(desc: Descriptor, children: (data: Buffer) => Descriptor[]): Promise<Buffer> {
    this.progress.add(desc.digest, desc.media_type, desc.size);
    trace(`small ${desc.digest}`);
    // its bytes are read either way (for its children): asked beside the store's record, not after
    const [existing, data] = await Promise.all([this.be.info(this.ctx, desc.digest), this.reg.readAll(desc, this.ctx.signal)]);
    trace(`info, read`);
    if (existing) {
      const labels = { ...childLabels(children(data)), ...(await this.sourceLabel(desc.digest, existing)) };
      await this.be.writeBlob(this.ctx, refKey(desc), desc, data, {}); // puts it under the lease
      await this.be.updateLabels(this.ctx, desc.digest, labels);
      this.progress.state(desc.digest, 'exists');
      return data;
    }
    const labels = { ...childLabels(children(data)), ...(await this.sourceLabel(desc.digest, {})) };
    if (!(await this.be.writeBlob(this.ctx, refKey(desc), desc, data, labels))) await this.be.updateLabels(this.ctx, desc.digest, labels);
    this.progress.state(desc.digest, 'downloaded');
    return data;
  }

  private async handle(desc: Descriptor, platform: Platform | undefined): Promise<void> {
    if (isIndex(desc.media_type)) {
      let manifests: Descriptor[] = [];
      await this.small(desc, (data) => (manifests = ((JSON.parse(data.toString('utf8')) as { manifests?: JsonDescriptor[] }).manifests ?? []).map((m) => fromJson(m, `index ${desc.digest}`))));
      const chosen = manifests.filter((m) => this.o.all || !m.platform || matches(this.o.wanted, m.platform));
      await Promise.all(chosen.map((m) => this.handle(m, m.platform)));
      return;
    }
    if (!isManifest(desc.media_type)) throw new BerthError(Code.Unimplemented, `${desc.digest}: media type ${desc.media_type} is not supported`);
    let doc!: ManifestDoc;
    let configData!: Promise<Buffer>;
    await this.small(desc, (data) => {
      const raw = JSON.parse(data.toString('utf8')) as { config?: JsonDescriptor; layers?: JsonDescriptor[] };
      if (!raw.config || !Array.isArray(raw.layers)) throw new BerthError(Code.FailedPrecondition, `manifest ${desc.digest}: no config or layers`);
      doc = { config: fromJson(raw.config, `manifest ${desc.digest}`), layers: raw.layers.map((l) => fromJson(l, `manifest ${desc.digest}`)) };
      // the layers start now, while the manifest and config are stored: they are the long part
      // (a lone manifest for another platform fails the pull a moment later, which stops them)
      for (const l of doc.layers) this.fetchLayer(l);
      // and the config, whose diff ids the unpack waits for, while the manifest is stored
      configData = this.track(this.small(doc.config, () => []));
      return [doc.config, ...doc.layers];
    });
    const config = JSON.parse((await configData).toString('utf8')) as {
      os?: string;
      architecture?: string;
      variant?: string;
      rootfs?: { diff_ids?: string[] };
    };
    const p = platform ?? (config.os && config.architecture ? { os: config.os, architecture: config.architecture, variant: config.variant } : undefined);
    // a lone manifest is checked against the platform as containerd's unpack checks it
    if (!platform && !this.o.all && !matches(this.o.wanted, p)) return;
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== doc.layers.length) throw new BerthError(Code.FailedPrecondition, `manifest ${desc.digest}: ${doc.layers.length} layers but ${diffIds.length} diff ids`);
    this.toUnpack.push({ platform: p ? formatPlatform(p) : '', manifest: doc, diffIds });
  }

  /** Starts (once per digest) fetching a layer into the content store. */
  private fetchLayer(desc: Descriptor): Promise<void> {
    let f = this.fetches.get(desc.digest);
    if (!f) {
      this.progress.add(desc.digest, desc.media_type, desc.size);
      const g = deferred<string | undefined>();
      this.growing.set(desc.digest, g);
      f = this.track(this.fetchBlob(desc, (path) => g.resolve(path)));
      // a blob that was there, or a failed fetch: no file to follow
      const settled = () => {
        g.resolve(undefined);
        this.growing.delete(desc.digest);
      };
      f.then(settled, settled);
      this.fetches.set(desc.digest, f);
    }
    return f;
  }

  /** The ingest file a layer's download is writing, once it writes; undefined when there is none. */
  private ingestOf(desc: Descriptor): Promise<string | undefined> {
    void this.fetchLayer(desc).catch(() => undefined);
    // once fetched, the ingest is the committed blob: nothing to follow
    const g = this.growing.get(desc.digest);
    return g ? g.promise.then((path) => (this.written.has(desc.digest) ? undefined : path)) : Promise.resolve(undefined);
  }

  private async fetchBlob(desc: Descriptor, writing: (path: string) => void): Promise<void> {
    const key = `${this.ctx.namespace}\0${desc.digest}`;
    for (let other; (other = this.o.inflight.get(key)); ) {
      // the other pull's outcome is its own: this one looks at the store afterwards
      await other.catch(() => undefined);
      this.ctx.signal?.throwIfAborted();
    }
    const mine = this.fetchBlobNow(desc, writing);
    const settled = mine.then(
      () => undefined,
      () => undefined,
    );
    this.o.inflight.set(key, settled);
    try {
      await mine;
    } finally {
      if (this.o.inflight.get(key) === settled) this.o.inflight.delete(key);
    }
  }

  private async fetchBlobNow(desc: Descriptor, writing: (path: string) => void): Promise<void> {
    const ref = refKey(desc);
    // a download slot is held while the bytes come, not while content checks them (the commit
    // rehashes the blob): the next layer's download starts meanwhile. Slots go in layer order.
    const fetched = await this.o.limit(async () => {
      this.ctx.signal?.throwIfAborted();
      trace(`fetch ${desc.digest}`);
      let ingest;
      try {
        ingest = await this.be.ingest(this.ctx, ref, desc);
      } catch (e) {
        if (!isCode(e, Code.AlreadyExists)) throw e;
        return false;
      }
      trace(`ingest ${desc.digest}`);
      if (!ingest.shared) await this.download(desc, ingest.path, ingest.offset, () => writing(ingest.path));
      this.written.add(desc.digest);
      trace(`downloaded ${desc.digest}`);
      return true;
    });
    if (!fetched) {
      await this.be.updateLabels(this.ctx, desc.digest, await this.sourceLabel(desc.digest));
      this.progress.state(desc.digest, 'exists');
      return;
    }
    const labels = await this.sourceLabel(desc.digest, {});
    try {
      await this.be.commit(this.ctx, ref, desc, labels);
    } catch (e) {
      if (isCode(e, Code.AlreadyExists)) {
        await this.be.updateLabels(this.ctx, desc.digest, await this.sourceLabel(desc.digest));
      } else if (isCode(e, Code.FailedPrecondition)) {
        // bytes that are not the blob: start over next time rather than resume them
        await this.be.abort(this.ctx, ref).catch(() => undefined);
        throw toBerthError(e).wrap(`failed to fetch ${desc.digest}`);
      } else throw e;
    }
    trace(`committed ${desc.digest}`);
    this.progress.state(desc.digest, 'downloaded');
  }

  /**
   * Appends the blob's bytes from `offset` to the ingest file. A connection that breaks is
   * resumed with a Range request from what the file holds; the registry is retried for as long
   * as it keeps making progress within the retry window.
   */
  private async download(desc: Descriptor, path: string, offset: number, started: () => void): Promise<void> {
    const fh = await open(path, 'r+');
    const signal = this.ctx.signal;
    let lastProgress = Date.now();
    let backoff = 100;
    try {
      if ((await fh.stat()).size !== offset) await fh.truncate(offset);
      started();
      while (offset < desc.size) {
        try {
          const { body, from } = await this.reg.open(desc, offset, signal);
          if (from !== offset) {
            await fh.truncate(from);
            offset = from;
          }
          let buf: Buffer[] = [];
          let buffered = 0;
          const flush = async () => {
            if (!buffered) return;
            // the chunks as they came, in one call and without copying them together
            const chunks = buf;
            let pending = buf;
            const n = buffered;
            buf = [];
            buffered = 0;
            for (let done = 0; done < n; ) {
              const w = (await fh.writev(pending, offset + done)).bytesWritten;
              done += w;
              // a short write (rare): the rest, from where it stopped
              if (done < n) pending = [Buffer.concat(pending).subarray(w)];
            }
            // written: their buffers take the next reads
            for (const c of chunks) recycle(c);
            offset += n;
            this.progress.bytes(desc.digest, offset);
          };
          try {
            for await (const chunk of body) {
              if (offset + buffered + chunk.length > desc.size) throw new BerthError(Code.FailedPrecondition, `failed to fetch ${desc.digest}: registry sent more than its ${desc.size} bytes`);
              buf.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
              buffered += chunk.length;
              if (buffered >= 1 << 20) {
                await flush();
                lastProgress = Date.now();
                backoff = 100;
              }
            }
          } finally {
            await flush();
          }
          if (offset < desc.size) throw new BerthError(Code.Unavailable, `${desc.digest}: connection closed at ${offset} of ${desc.size} bytes`);
        } catch (e) {
          if (signal?.aborted) throw signal.reason ?? e;
          const be = e instanceof BerthError ? e : new BerthError(Code.Unavailable, `${desc.digest}: ${(e as Error).message}`);
          if (be.code !== Code.Unavailable) throw be;
          if (Date.now() - lastProgress > this.o.retryWindowMs) throw be.wrap(`failed to fetch ${desc.digest}`);
          await sleep(backoff, signal);
          backoff = Math.min(backoff * 2, 2000);
        }
      }
    } finally {
      await fh.close();
    }
  }

  private unpack(m: ManifestDoc, diffIds: string[]): Promise<string> {
    return unpackLayers(this.be, this.ctx, this.o.snapshotter, m, diffIds, this.progress, (l) => this.fetchLayer(l), (l) => this.ingestOf(l));
  }
}

/** A promise with its resolve, and whether it has settled. */
function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const d = { done: false, promise: new Promise<T>((res, rej) => ((resolve = res), (reject = rej))), resolve: (v: T) => ((d.done = true), resolve(v)), reject: (e: unknown) => ((d.done = true), reject(e)) };
  d.promise.catch(() => undefined);
  return d;
}

/** Another pull committed a chain snapshot meanwhile: the layers stacked on ours are redone in order. */
class RedoInOrder extends Error {}

/**
 * Unpacks an image's layers as containerd's Image.Unpack does, with the same result: a layer whose
 * chain's snapshot exists is skipped; otherwise `extract-… <chainid>` is prepared on its parent,
 * the layer applied (its diff id checked), committed as the chain id, and the blob labelled with
 * its uncompressed digest. `ready` resolves once a layer's blob is in the store. Returns the chain
 * id of the rootfs (also labelled on the config, so the collector keeps the snapshots).
 *
 * On overlayfs the layers are applied beside each other, each as soon as its blob is in: a
 * layer's snapshot is prepared on its parent's active one before that is committed (the snapshot
 * service's PrepareOnPending), and applied with its lowers marked pending; a layer that needs
 * them (a folder made on the way, a hardlink to a lower file) is applied again, in place, once
 * they are committed. Only the commits go in order, each after its parent's.
 */
export async function unpackLayers(
  be: PullBackends,
  ctx: CallContext,
  sn: string,
  m: { config: Descriptor; layers: Descriptor[] },
  diffIds: string[],
  progress: Progress,
  ready: (layer: Descriptor) => Promise<void> = async () => undefined,
  growing: (layer: Descriptor) => Promise<string | undefined> = async () => undefined,
): Promise<string> {
  const chain = chainIds(diffIds);
  // which snapshots exist, asked all at once up front rather than one round trip per layer on the
  // unpack's critical path (one made meanwhile by another pull shows as AlreadyExists at commit)
  const exists = await Promise.all(chain.map((id) => be.snapshotExists(ctx, sn, id)));
  // label updates go on beside the other layers' unpacks; all are awaited before the end
  const labelling: Promise<void>[] = [];
  const unpacked = (i: number) => {
    const labelled = be.updateLabels(ctx, m.layers[i]!.digest, { 'containerd.io/uncompressed': diffIds[i]! });
    labelled.catch(() => undefined);
    labelling.push(labelled);
    progress.state(m.layers[i]!.digest, 'unpacked');
  };
  // the ones that exist are a bottom part of the stack (anything else: one by one, as before)
  const have = exists.findIndex((e) => !e);
  const besides = sn === 'overlayfs' && have >= 0 && exists.slice(have).every((e) => !e) && m.layers.length - have > 1;
  let done = false;
  if (besides) {
    try {
      await unpackBeside(be, ctx, sn, m.layers, diffIds, chain, have, progress, ready, growing, unpacked);
      done = true;
    } catch (e) {
      if (!(e instanceof RedoInOrder)) throw e;
    }
  }
  if (!done) await unpackInOrder(be, ctx, sn, m.layers, diffIds, chain, progress, ready, unpacked);
  await Promise.all(labelling);
  const rootfs = chain.at(-1) ?? '';
  await be.updateLabels(ctx, m.config.digest, { [`containerd.io/gc.ref.snapshot.${sn}`]: rootfs });
  return rootfs;
}

/** One layer after the other, each on its committed parent. */
async function unpackInOrder(
  be: PullBackends,
  ctx: CallContext,
  sn: string,
  layers: Descriptor[],
  diffIds: string[],
  chain: string[],
  progress: Progress,
  ready: (layer: Descriptor) => Promise<void>,
  unpacked: (i: number) => void,
): Promise<void> {
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i]!;
    await ready(layer);
    const chainId = chain[i]!;
    if (await be.snapshotExists(ctx, sn, chainId)) continue;
    progress.state(layer.digest, 'unpacking');
    const key = extractKey(chainId);
    trace(`unpack ${layer.digest}`);
    const mounts = await be.prepare(ctx, sn, key, i > 0 ? chain[i - 1]! : '');
    try {
      const applied = await be.apply(ctx, layer, mounts);
      if (applied.digest !== diffIds[i]) throw wrongDiffId(diffIds[i]!, applied.digest);
      await be.commitSnapshot(ctx, sn, chainId, key);
      trace(`committed snapshot`);
    } catch (e) {
      await be.removeSnapshot({ namespace: ctx.namespace, lease: ctx.lease }, sn, key).catch(() => undefined);
      // another pull committed the same chain meanwhile: it is there, as wanted
      if (isCode(e, Code.AlreadyExists)) continue;
      throw e;
    }
    unpacked(i);
  }
}

const wrongDiffId = (want: string, got: string) => new BerthError(Code.FailedPrecondition, `failed to extract layer ${want}: wrong diff id calculated on extraction "${got}"`);

/** Layers `from`… (none of whose snapshots exist) applied beside each other; see unpackLayers. */
async function unpackBeside(
  be: PullBackends,
  ctx: CallContext,
  sn: string,
  layers: Descriptor[],
  diffIds: string[],
  chain: string[],
  from: number,
  progress: Progress,
  ready: (layer: Descriptor) => Promise<void>,
  growing: (layer: Descriptor) => Promise<string | undefined>,
  unpacked: (i: number) => void,
): Promise<void> {
  // the first failure stops the other layers' steps; what they made is removed after
  const stop = new AbortController();
  const lctx: CallContext = { ...ctx, signal: ctx.signal ? AbortSignal.any([ctx.signal, stop.signal]) : stop.signal };
  const n = layers.length;
  const keys: string[] = [];
  const prepared = layers.map(() => deferred<Awaited<ReturnType<PullBackends['prepare']>>>());
  const committed = layers.map(() => deferred());
  const ours = layers.map(() => false); // committed by this unpack
  for (let i = 0; i < from; i++) committed[i]!.resolve();
  // the snapshots, made in order at the start (each on the one before, still active), while the
  // blobs come in
  const making = (async () => {
    for (let i = from; i < n; i++) {
      lctx.signal!.throwIfAborted();
      const key = extractKey(chain[i]!);
      keys[i] = key;
      const mounts = i === from ? await be.prepare(lctx, sn, key, i > 0 ? chain[i - 1]! : '') : await be.prepareOnPending(lctx, sn, key, chain[i - 1]!, keys[i - 1]!);
      prepared[i]!.resolve(mounts);
    }
  })();
  making.catch((e) => {
    for (const p of prepared) if (!p.done) p.reject(e);
  });
  const one = async (i: number) => {
    const layer = layers[i]!;
    const mounts = await prepared[i]!.promise;
    // while its download writes it, a layer is applied from the ingest file as the bytes come
    const ingest = await growing(layer);
    if (!ingest) await ready(layer);
    lctx.signal!.throwIfAborted();
    progress.state(layer.digest, 'unpacking');
    trace(`unpack ${layer.digest}${ingest ? ' from its ingest' : ''}`);
    let applied;
    // a download that fails stops the apply waiting for its bytes, with the download's error
    const fetchFailed = new AbortController();
    if (ingest) ready(layer).catch((e: unknown) => fetchFailed.abort(e));
    try {
      try {
        applied = await be.apply(ingest ? { ...lctx, signal: AbortSignal.any([lctx.signal!, fetchFailed.signal]) } : lctx, layer, mounts, i > from && !ours[i - 1], ingest ? { path: ingest, diffId: diffIds[i] } : undefined);
      } catch (e) {
        // the download ended and its commit moved the file before the diff opened it: the
        // committed blob, still beside the parents
        if (!ingest || !isCode(e, Code.NotFound) || fetchFailed.signal.aborted || lctx.signal!.aborted) throw e;
        trace(`committed meanwhile ${layer.digest}`);
        await ready(layer);
        applied = await be.apply(lctx, layer, mounts, i > from && !ours[i - 1]);
      }
    } catch (e) {
      if (fetchFailed.signal.aborted) throw fetchFailed.signal.reason;
      if (!isCode(e, Code.Aborted) || lctx.signal!.aborted) throw e;
      // it needs its parents' files, or its download had trouble: again, in place, once the
      // parents and the blob are in
      trace(`again ${layer.digest}: ${(e as Error).message}`);
      if (i > 0) await committed[i - 1]!.promise;
      await ready(layer);
      applied = await be.apply(lctx, layer, mounts);
    }
    if (applied.digest !== diffIds[i]) throw wrongDiffId(diffIds[i]!, applied.digest);
    trace(`applied ${layer.digest}`);
    // the blob committed (content checked its digest) before its snapshot is
    await ready(layer);
    if (i > 0) await committed[i - 1]!.promise;
    try {
      await be.commitSnapshot(lctx, sn, chain[i]!, keys[i]!);
    } catch (e) {
      // another pull committed this chain: the layers above stand on our copy of it
      if (isCode(e, Code.AlreadyExists)) throw new RedoInOrder();
      throw e;
    }
    trace(`committed snapshot ${i}`);
    ours[i] = true;
    committed[i]!.resolve();
    unpacked(i);
  };
  const runs = [];
  for (let i = from; i < n; i++) {
    const r = one(i);
    r.catch((e) => {
      stop.abort(e);
      committed[i]!.reject(e);
    });
    runs.push(r);
  }
  const outcome = await Promise.allSettled([making, ...runs]);
  const failed = outcome.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (!failed) return;
  // what is not committed goes, top first; the first failure is the answer (an abort's reason)
  for (let i = n - 1; i >= from; i--) {
    if (keys[i] && !ours[i]) await be.removeSnapshot({ namespace: ctx.namespace, lease: ctx.lease }, sn, keys[i]!).catch(() => undefined);
  }
  throw stop.signal.aborted ? stop.signal.reason : failed.reason;
}
