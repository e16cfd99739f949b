// OCI image layout tarballs, as containerd's images/archive writes and reads them: Export makes
// what `ctr images export` makes (oci-layout, index.json naming each image, a Docker-compatible
// manifest.json, blobs/<alg>/<hex>; entries sorted by name, Go's tar headers), byte for byte;
// Import takes such a tarball or a `docker save` one.
import { createHash } from 'node:crypto';
import { tarEnd, tarHeader, tarPadding, TarReader } from '@berth/diff';
import { BerthError, Code, invalidArgument, notFound } from '@berth/errdefs';
import type { CallContext } from '@berth/bus';
import type { PullBackends } from './backends.js';
import { hostPlatform, matches, parsePlatform, type Platform } from './platform.js';
import { open } from 'node:fs/promises';
import { isCode } from '@berth/errdefs';
import { childLabels, fromJson, rfc3339, unpackLayers, type JsonDescriptor } from './pull.js';
import { Progress, type ProgressReport } from './progress.js';
import { parseReference } from './reference.js';
import { isIndex, isManifest, type Descriptor } from './registry.js';

export const annotationImageName = 'io.containerd.image.name';
export const annotationRefName = 'org.opencontainers.image.ref.name';

interface TarRecord {
  name: string;
  mode: number;
  typeflag: '0' | '5';
  size: number;
  /** the bytes: given, or streamed from the content store */
  data?: Buffer;
  digest?: string;
}

/** A descriptor as Go's json.Marshal writes ocispec.Descriptor (field order, sorted maps). */
function goDescriptor(d: Descriptor): Record<string, unknown> {
  const out: Record<string, unknown> = { mediaType: d.media_type, digest: d.digest, size: d.size };
  if (d.urls?.length) out.urls = d.urls;
  if (d.annotations && Object.keys(d.annotations).length) out.annotations = Object.fromEntries(Object.entries(d.annotations).sort(([a], [b]) => (a < b ? -1 : 1)));
  if (d.platform) {
    const p = d.platform as Platform & { 'os.version'?: string; 'os.features'?: string[]; features?: string[] };
    out.platform = { architecture: p.architecture, os: p.os, ...(p.variant ? { variant: p.variant } : {}) };
  }
  return out;
}

/** Go's json.Marshal escapes <, > and & in strings. */
const goJson = (v: unknown) => JSON.stringify(v).replace(/[<>&]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);

/** docker's familiar name: `docker.io/library/x:tag` is `x:tag`, a name without tag gets `:latest`. */
function familiar(name: string): string {
  const r = parseReference(name);
  let repo = `${r.host}/${r.repository}`;
  if (r.host === 'docker.io') repo = r.repository.startsWith('library/') && r.repository.split('/').length === 2 ? r.repository.slice(8) : r.repository;
  return `${repo}:${r.tag ?? 'latest'}`;
}

/** containerd's ociReferenceName: the tag (or what follows the repository) */
function refName(name: string): string {
  try {
    const r = parseReference(name);
    return r.digest ? (r.tag ? `${r.tag}@${r.digest}` : r.digest) : (r.tag ?? name);
  } catch {
    return name;
  }
}

export interface ExportOptions {
  names: string[];
  platforms?: string[];
  allPlatforms?: boolean;
  skipManifestJson?: boolean;
}

export class Archiver {
  constructor(
    private readonly be: PullBackends,
    private readonly images: { get(ns: string, name: string): Promise<{ name: string; target: Descriptor }> },
  ) {}

  private async read(ctx: CallContext, digest: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of await this.be.openBlob(ctx, digest)) chunks.push(Buffer.from(c as Buffer));
    return Buffer.concat(chunks);
  }

  /** The tarball's bytes, in chunks. */
  async *export(ns: string, o: ExportOptions, signal?: AbortSignal): AsyncGenerator<Buffer> {
    if (!o.names.length) throw invalidArgument('please provide at least one image to export');
    const ctx: CallContext = { namespace: ns, signal };
    const wanted = (o.platforms ?? []).filter(Boolean).map(parsePlatform);
    if (!wanted.length) wanted.push(hostPlatform());
    const manifests: Descriptor[] = [];
    for (const name of o.names) {
      const img = await this.images.get(ns, name);
      manifests.push({ ...img.target, annotations: { ...(img.target.annotations ?? {}), [annotationImageName]: name, [annotationRefName]: refName(name) } });
    }
    const records: TarRecord[] = [
      { name: 'oci-layout', mode: 0o444, typeflag: '0', size: 30, data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    ];
    const index = Buffer.from(goJson({ schemaVersion: 2, manifests: manifests.map(goDescriptor) }));
    records.push({ name: 'index.json', mode: 0o644, typeflag: '0', size: index.length, data: index });
    const blob = (d: Descriptor): TarRecord => ({ name: `blobs/${d.digest.replace(':', '/')}`, mode: 0o444, typeflag: '0', size: d.size, digest: d.digest });
    const algorithms = new Set<string>();
    // what manifest.json lists: a manifest's digest → its names
    const docker = new Map<string, { manifest: Descriptor; names: string[] }>();
    const walk = async (d: Descriptor) => {
      records.push(blob(d));
      algorithms.add(d.digest.split(':')[0]!);
      if (isManifest(d.media_type)) {
        const m = JSON.parse((await this.read(ctx, d.digest)).toString('utf8')) as { config?: JsonDescriptor; layers?: JsonDescriptor[] };
        for (const c of [fromJson(m.config, `manifest ${d.digest}`), ...(m.layers ?? []).map((l) => fromJson(l, `manifest ${d.digest}`))]) await walk(c);
      } else if (isIndex(d.media_type)) {
        const idx = JSON.parse((await this.read(ctx, d.digest)).toString('utf8')) as { manifests?: JsonDescriptor[] };
        for (const c of (idx.manifests ?? []).map((x) => fromJson(x, `index ${d.digest}`))) await walk(c);
      }
    };
    for (const desc of manifests) {
      const name = desc.annotations?.[annotationImageName] ?? '';
      if (isManifest(desc.media_type)) {
        await walk(desc);
        const e = docker.get(desc.digest) ?? { manifest: desc, names: [] };
        if (name) e.names.push(name);
        docker.set(desc.digest, e);
      } else if (isIndex(desc.media_type)) {
        records.push(blob(desc));
        algorithms.add(desc.digest.split(':')[0]!);
        const idx = JSON.parse((await this.read(ctx, desc.digest)).toString('utf8')) as { manifests?: JsonDescriptor[] };
        const chosen: Descriptor[] = [];
        for (const m of (idx.manifests ?? []).map((x) => fromJson(x, `index ${desc.digest}`))) {
          if (!m.platform || matches(wanted, m.platform)) chosen.push(m);
          else if (!o.allPlatforms) continue;
          await walk(m);
        }
        if (!o.allPlatforms && chosen.length === 0) throw notFound('no manifest found for platform');
        const first = chosen.find((m) => isManifest(m.media_type));
        if (first && name) {
          const e = docker.get(first.digest) ?? { manifest: first, names: [] };
          e.names.push(name);
          docker.set(first.digest, e);
        }
      } else {
        throw invalidArgument('only manifests may be exported');
      }
    }
    if (docker.size && !o.skipManifestJson) {
      const list = [];
      for (const { manifest, names } of docker.values()) {
        const m = JSON.parse((await this.read(ctx, manifest.digest)).toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
        list.push({ Config: `blobs/${m.config.digest.replace(':', '/')}`, RepoTags: names.length ? names.map(familiar) : null, Layers: m.layers.map((l) => `blobs/${l.digest.replace(':', '/')}`) });
      }
      const data = Buffer.from(goJson(list));
      records.push({ name: 'manifest.json', mode: 0o644, typeflag: '0', size: data.length, data });
    }
    if (algorithms.size) {
      records.push({ name: 'blobs/', mode: 0o755, typeflag: '5', size: 0 });
      for (const a of algorithms) records.push({ name: `blobs/${a}/`, mode: 0o755, typeflag: '5', size: 0 });
    }
    records.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    let last = '';
    for (const r of records) {
      if (r.name === last) continue;
      last = r.name;
      yield tarHeader({ name: r.name, mode: r.mode, typeflag: r.typeflag, size: r.size });
      if (r.data) yield r.data;
      else if (r.digest) {
        const h = createHash(r.digest.split(':')[0]!);
        let n = 0;
        for await (const c of await this.be.openBlob(ctx, r.digest)) {
          const b = c as Buffer;
          h.update(b);
          n += b.length;
          yield b;
        }
        if (n !== r.size || `${r.digest.split(':')[0]}:${h.digest('hex')}` !== r.digest) throw new BerthError(Code.DataLoss, `unexpected digest copied for ${r.digest}`);
      }
      if (r.size) yield tarPadding(r.size);
    }
    yield tarEnd();
  }
}

export interface ImportOptions {
  baseName?: string;
  indexName?: boolean;
  skipUnpack?: boolean;
  snapshotter?: string;
  platforms?: string[];
  allPlatforms?: boolean;
  labels?: Record<string, string>;
}

interface DockerManifest {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

const mt = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
};

/** docker's normalised name: `busybox:1` is `docker.io/library/busybox:1`. */
const normalized = (name: string) => parseReference(name).name;

export interface ImageWriterFull {
  get(ns: string, name: string): Promise<{ name: string; target: Descriptor }>;
  /** update the target, or create the record (containerd's client Import) */
  putTarget(ns: string, image: { name: string; target: Descriptor; labels: Record<string, string> }): Promise<void>;
}

/**
 * Imports a tarball as containerd's client does (images/archive ImportIndex, then Import): every
 * regular file but oci-layout and manifest.json is stored as a blob (`tar-<name>` ingests,
 * digests computed, content verifies them); an OCI layout's index.json is the result, a
 * docker save's manifest.json becomes Docker manifests and an index; then the index is walked
 * (manifests of the wanted platforms), children labelled, an image made for every manifest with
 * a name (its io.containerd.image.name, or <base>:<ref name>), and each unpacked. Under a lease,
 * deleted at the end.
 */
export class Importer {
  constructor(
    private readonly be: PullBackends,
    private readonly images: ImageWriterFull,
  ) {}

  async import(ns: string, o: ImportOptions, tarball: AsyncIterable<Buffer>, onProgress: (r: ProgressReport) => void, signal?: AbortSignal): Promise<{ name: string; target: Descriptor }[]> {
    const progress = new Progress(onProgress);
    const lease = await this.be.createLease({ namespace: ns, signal }, { 'containerd.io/gc.expire': rfc3339(new Date(Date.now() + 24 * 3600_000)) });
    const ctx: CallContext = { namespace: ns, lease, signal };
    try {
      progress.phase('importing');
      const index = await this.untar(ctx, tarball, progress);
      const wanted = (o.platforms ?? []).filter(Boolean).map(parsePlatform);
      if (!wanted.length) wanted.push(hostPlatform());
      const imgs: { name: string; target: Descriptor }[] = [];
      if (o.indexName && o.baseName) imgs.push({ name: o.baseName, target: index });
      // the walk: children of the wanted platforms, labelled as containerd's SetChildrenLabels does
      const manifests: Descriptor[] = [];
      const walk = async (d: Descriptor, root: boolean): Promise<void> => {
        if (isIndex(d.media_type)) {
          const idx = JSON.parse((await this.read(ctx, d.digest)).toString('utf8')) as { manifests?: JsonDescriptor[] };
          const children = (idx.manifests ?? []).map((m) => fromJson(m, `index ${d.digest}`)).filter((m) => o.allPlatforms || !m.platform || matches(wanted, m.platform));
          if (root) {
            for (const m of children) {
              const name = m.annotations?.[annotationImageName] || (o.baseName && m.annotations?.[annotationRefName] ? `${o.baseName}:${m.annotations[annotationRefName]}` : '');
              if (name) imgs.push({ name, target: m });
            }
          }
          if (children.length) await this.be.updateLabels(ctx, d.digest, childLabels(children));
          for (const c of children) await walk(c, false);
        } else if (isManifest(d.media_type)) {
          const m = JSON.parse((await this.read(ctx, d.digest)).toString('utf8')) as { config?: JsonDescriptor; layers?: JsonDescriptor[] };
          const children = [fromJson(m.config, `manifest ${d.digest}`), ...(m.layers ?? []).map((l) => fromJson(l, `manifest ${d.digest}`))];
          await this.be.updateLabels(ctx, d.digest, childLabels(children));
          manifests.push(d);
        }
      };
      await walk(index, true);
      for (const img of imgs) await this.images.putTarget(ns, { ...img, labels: o.labels ?? {} });
      if (!o.skipUnpack) {
        progress.phase('unpacking');
        const sn = o.snapshotter || 'overlayfs';
        const done = new Set<string>();
        for (const img of imgs) {
          const m = await this.platformManifest(ctx, img.target, wanted);
          if (!m || done.has(m.digest)) continue;
          done.add(m.digest);
          const doc = JSON.parse((await this.read(ctx, m.digest)).toString('utf8')) as { config?: JsonDescriptor; layers?: JsonDescriptor[] };
          const config = fromJson(doc.config, `manifest ${m.digest}`);
          const layers = (doc.layers ?? []).map((l) => fromJson(l, `manifest ${m.digest}`));
          const cfg = JSON.parse((await this.read(ctx, config.digest)).toString('utf8')) as { rootfs?: { diff_ids?: string[] } };
          await unpackLayers(this.be, ctx, sn, { config, layers }, cfg.rootfs?.diff_ids ?? [], progress);
        }
      }
      progress.phase('done');
      await this.be.deleteLease({ namespace: ns }, lease);
      return imgs;
    } finally {
      progress.stop();
    }
  }

  /** The manifest of an image for these platforms (the first match of an index). */
  private async platformManifest(ctx: CallContext, d: Descriptor, wanted: Platform[]): Promise<Descriptor | undefined> {
    if (isManifest(d.media_type)) return d;
    if (!isIndex(d.media_type)) return undefined;
    const idx = JSON.parse((await this.read(ctx, d.digest)).toString('utf8')) as { manifests?: JsonDescriptor[] };
    for (const m of (idx.manifests ?? []).map((x) => fromJson(x, `index ${d.digest}`))) {
      if (m.platform && !matches(wanted, m.platform)) continue;
      const r = await this.platformManifest(ctx, m, wanted);
      if (r) return r;
    }
    return undefined;
  }

  private async read(ctx: CallContext, digest: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of await this.be.openBlob(ctx, digest)) chunks.push(Buffer.from(c as Buffer));
    return Buffer.concat(chunks);
  }

  /** Stores a blob whose digest is learnt as it is written; returns its descriptor. */
  private async storeEntry(ctx: CallContext, name: string, size: number, data: AsyncIterable<{ chunk: Buffer }>): Promise<Descriptor> {
    const ref = `tar-${name}`;
    const f = await this.be.ingest(ctx, ref, { media_type: '', digest: '', size });
    const h = createHash('sha256');
    const fh = await open(f.path, 'r+');
    try {
      await fh.truncate(0);
      let at = 0;
      for await (const { chunk } of data) {
        h.update(chunk);
        await fh.write(chunk, 0, chunk.length, at);
        at += chunk.length;
      }
    } finally {
      await fh.close();
    }
    const digest = `sha256:${h.digest('hex')}`;
    const desc = { media_type: '', digest, size };
    try {
      await this.be.commit(ctx, ref, desc, {});
    } catch (e) {
      // the namespace has these bytes already: they are what we need
      if (!isCode(e, Code.AlreadyExists)) throw e;
      await this.be.abort(ctx, ref).catch(() => undefined);
    }
    return desc;
  }

  private async untar(ctx: CallContext, tarball: AsyncIterable<Buffer>, progress: Progress): Promise<Descriptor> {
    const tar = new TarReader(tarball);
    const blobs = new Map<string, Descriptor>();
    const symlinks = new Map<string, string>();
    let layout: { imageLayoutVersion?: string } | undefined;
    let docker: DockerManifest[] | undefined;
    const clean = (n: string) => n.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
    const readAll = async () => {
      const parts: Buffer[] = [];
      for await (const { chunk } of tar.data()) parts.push(chunk);
      return Buffer.concat(parts);
    };
    for (let h; (h = await tar.next()); ) {
      const name = clean(h.name);
      if (h.typeflag === '2') symlinks.set(name, clean(name.includes('/') ? `${name.slice(0, name.lastIndexOf('/'))}/${h.linkname}` : h.linkname));
      if (h.typeflag !== '0') continue;
      if (name === 'oci-layout') layout = JSON.parse((await readAll()).toString('utf8'));
      else if (name === 'manifest.json') docker = JSON.parse((await readAll()).toString('utf8'));
      else {
        const d = await this.storeEntry(ctx, name, h.size, tar.data());
        blobs.set(name, d);
        progress.add(d.digest, name, d.size);
        progress.state(d.digest, 'downloaded');
      }
    }
    if (layout?.imageLayoutVersion) {
      if (layout.imageLayoutVersion !== '1.0.0') throw invalidArgument(`unsupported OCI version ${layout.imageLayoutVersion}`);
      const idx = blobs.get('index.json');
      if (!idx) throw invalidArgument('missing index.json in OCI layout 1.0.0');
      return { ...idx, media_type: mt.ociIndex };
    }
    if (!docker) throw invalidArgument('unrecognized image format');
    for (const [n, target] of symlinks) {
      const d = blobs.get(target);
      if (!d) throw invalidArgument(`no target for symlink layer from "${n}" to "${target}"`);
      blobs.set(n, d);
    }
    const manifests: Record<string, unknown>[] = [];
    for (const m of docker) {
      const config = blobs.get(m.Config);
      if (!config) throw invalidArgument(`image config "${m.Config}" not found`);
      const layers = [];
      for (const l of m.Layers) {
        const d = blobs.get(l);
        if (!d) throw invalidArgument(`layer "${l}" not found`);
        // a layer's media type by its first bytes: gzip or a plain tar
        const head = await this.head(ctx, d.digest);
        layers.push({ mediaType: head[0] === 0x1f && head[1] === 0x8b ? mt.dockerLayerGzip : mt.dockerLayer, digest: d.digest, size: d.size });
      }
      const body = Buffer.from(goJson({ schemaVersion: 2, mediaType: mt.dockerManifest, config: { mediaType: mt.dockerConfig, digest: config.digest, size: config.size }, layers }));
      const desc: Descriptor = { media_type: mt.dockerManifest, digest: `sha256:${createHash('sha256').update(body).digest('hex')}`, size: body.length };
      await this.be.writeBlob(ctx, `manifest-${desc.digest}`, desc, body, {});
      const cfg = JSON.parse((await this.read(ctx, config.digest)).toString('utf8')) as { os?: string; architecture?: string; variant?: string };
      const platform = cfg.os && cfg.architecture ? { architecture: cfg.architecture, os: cfg.os, ...(cfg.variant ? { variant: cfg.variant } : {}) } : undefined;
      const base = { mediaType: desc.media_type, digest: desc.digest, size: desc.size };
      if (!m.RepoTags?.length) manifests.push({ ...base, ...(platform ? { platform } : {}) });
      for (const tag of m.RepoTags ?? []) {
        const name = normalized(tag);
        manifests.push({ ...base, annotations: { [annotationImageName]: name, [annotationRefName]: refName(name) }, ...(platform ? { platform } : {}) });
      }
    }
    const body = Buffer.from(goJson({ schemaVersion: 2, manifests }));
    const idx: Descriptor = { media_type: mt.ociIndex, digest: `sha256:${createHash('sha256').update(body).digest('hex')}`, size: body.length };
    await this.be.writeBlob(ctx, `index-${idx.digest}`, idx, body, {});
    return idx;
  }

  private async head(ctx: CallContext, digest: string): Promise<Buffer> {
    const s = await this.be.openBlob(ctx, digest);
    for await (const c of s) {
      (s as unknown as { destroy?: () => void }).destroy?.();
      return Buffer.from(c as Buffer);
    }
    return Buffer.alloc(0);
  }
}

export { TarReader };
