// A client of the OCI distribution API (Docker registry v2) over Node's fetch: resolving a
// reference to a descriptor, fetching manifests and blobs (from an offset, to resume), with
// anonymous, Basic and Bearer-token auth, mirrors tried before the registry itself, and plain
// HTTP for the hosts that speak it. Errors are BerthErrors with the code a caller acts on:
// NotFound (no such image), Unavailable (cannot reach a registry), Unauthenticated (401).
import { BerthError, Code, notFound } from '@berth/errdefs';
import { basic, parseChallenges, type Credentials } from './auth.js';
import type { Reference } from './reference.js';

export interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
  urls?: string[];
}

export const mediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
} as const;

export const isIndex = (mt: string) => mt === mediaTypes.dockerList || mt === mediaTypes.ociIndex;
export const isManifest = (mt: string) => mt === mediaTypes.dockerManifest || mt === mediaTypes.ociManifest;

const accept = [mediaTypes.dockerManifest, mediaTypes.dockerList, mediaTypes.ociManifest, mediaTypes.ociIndex, '*/*'].join(', ');

export interface RegistryOptions {
  /** speak plain HTTP to this host */
  plainHttp(host: string): boolean;
  /** base URLs tried before the host itself (`http://127.0.0.1:5001`) */
  mirrors(host: string): string[];
  credentials(host: string): Credentials | undefined;
  fetch?: typeof fetch;
}

/** Where a request went and what came back, for callers that resume. */
export interface BlobResponse {
  body: ReadableStream<Uint8Array>;
  /** the offset the body starts at: the one asked for (206), or 0 when the server sent it all */
  from: number;
}

/** What went wrong on the way, in words: `connect ECONNREFUSED 127.0.0.1:5000`. */
function errnoOf(e: unknown): string {
  const parts: string[] = [];
  let c: unknown = e;
  for (let i = 0; i < 4 && c; i++) {
    const m = (c as Error).message;
    if (m && m !== 'fetch failed') parts.push(m);
    c = (c as { cause?: unknown }).cause;
  }
  return parts.join(': ') || String((e as Error)?.message ?? e);
}

export class Registry {
  private readonly fetch: typeof fetch;
  /** Authorization header per endpoint, once a challenge was answered */
  private readonly auth = new Map<string, string>();

  constructor(
    readonly ref: Reference,
    private readonly opts: RegistryOptions,
  ) {
    this.fetch = opts.fetch ?? globalThis.fetch;
  }

  /** Base URLs in the order tried: the mirrors, then the registry. */
  endpoints(): string[] {
    const host = this.ref.host;
    const origin = host === 'docker.io' ? 'registry-1.docker.io' : host;
    const scheme = this.opts.plainHttp(host) ? 'http' : 'https';
    return [...this.opts.mirrors(host).map((m) => m.replace(/\/+$/, '')), `${scheme}://${origin}`];
  }

  /** One request to each endpoint in turn until one answers other than NotFound/Unavailable. */
  private async request(path: string, init: RequestInit & { headers: Record<string, string> }, signal?: AbortSignal): Promise<Response> {
    let last: BerthError | undefined;
    for (const base of this.endpoints()) {
      try {
        return await this.requestAt(base, path, init, signal);
      } catch (e) {
        if (!(e instanceof BerthError) || (e.code !== Code.Unavailable && e.code !== Code.NotFound) || signal?.aborted) throw e;
        last = e;
      }
    }
    throw last!;
  }

  private async requestAt(base: string, path: string, init: RequestInit & { headers: Record<string, string> }, signal?: AbortSignal): Promise<Response> {
    const url = `${base}/v2/${this.ref.repository}/${path}`;
    const method = init.method ?? 'GET';
    for (let attempt = 0; ; attempt++) {
      const headers = { ...init.headers };
      const a = this.auth.get(base);
      if (a) headers.authorization = a;
      let res: Response;
      try {
        res = await this.fetch(url, { ...init, headers, signal, redirect: 'follow' });
      } catch (e) {
        if (signal?.aborted) throw new BerthError(Code.Canceled, 'context canceled');
        throw new BerthError(Code.Unavailable, `failed to do request: ${method} "${url}": ${errnoOf(e)}`);
      }
      if (res.status === 401 && attempt === 0) {
        await res.body?.cancel();
        const header = await this.authorize(base, res.headers.get('www-authenticate'), signal);
        if (header) {
          this.auth.set(base, header);
          continue;
        }
      }
      if (res.ok) return res;
      await res.body?.cancel().catch(() => undefined);
      const what = `${method} "${url}"`;
      if (res.status === 401) throw new BerthError(Code.Unauthenticated, `pull access denied for ${this.ref.host}/${this.ref.repository}: ${what}: 401 Unauthorized`);
      if (res.status === 403) throw new BerthError(Code.PermissionDenied, `pull access denied for ${this.ref.host}/${this.ref.repository}: ${what}: 403 Forbidden`);
      if (res.status === 404) throw notFound(`${this.ref.name}`);
      if (res.status === 416) throw new BerthError(Code.OutOfRange, `${what}: 416 Range Not Satisfiable`);
      if (res.status === 429 || res.status >= 500) throw new BerthError(Code.Unavailable, `${what}: unexpected status ${res.status}`);
      throw new BerthError(Code.Unknown, `${what}: unexpected status ${res.status}`);
    }
  }

  /** The Authorization header that answers a 401's challenge, or undefined when none can. */
  private async authorize(base: string, header: string | null, signal?: AbortSignal): Promise<string | undefined> {
    const creds = this.opts.credentials(this.ref.host);
    for (const c of parseChallenges(header)) {
      if (c.scheme === 'basic' && creds) return basic(creds);
      if (c.scheme === 'bearer' && c.params.realm) {
        const u = new URL(c.params.realm);
        if (c.params.service) u.searchParams.set('service', c.params.service);
        u.searchParams.set('scope', c.params.scope || `repository:${this.ref.repository}:pull`);
        const headers: Record<string, string> = creds ? { authorization: basic(creds) } : {};
        let res: Response;
        try {
          res = await this.fetch(u, { headers, signal });
        } catch (e) {
          throw new BerthError(Code.Unavailable, `failed to fetch anonymous token: GET "${u}": ${errnoOf(e)}`);
        }
        if (!res.ok) {
          await res.body?.cancel();
          if (res.status === 401 || res.status === 403) throw new BerthError(Code.Unauthenticated, `failed to authorize: ${this.ref.host}: token request to ${u.origin}${u.pathname}: ${res.status}`);
          throw new BerthError(Code.Unavailable, `failed to authorize: ${this.ref.host}: token request: unexpected status ${res.status}`);
        }
        const body = (await res.json()) as { token?: string; access_token?: string };
        const token = body.token || body.access_token;
        if (token) return `Bearer ${token}`;
      }
    }
    void base;
    return undefined;
  }

  /**
   * The descriptor a tag or digest names now: HEAD with every manifest type accepted, the
   * registry's Docker-Content-Digest (or a GET and our own hash when it sends none).
   */
  async resolve(signal?: AbortSignal): Promise<Descriptor> {
    const path = `manifests/${this.ref.digest ?? this.ref.tag}`;
    const res = await this.request(path, { method: 'HEAD', headers: { accept } }, signal);
    const media_type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
    let digest = res.headers.get('docker-content-digest') ?? this.ref.digest ?? '';
    let size = Number(res.headers.get('content-length') ?? -1);
    if (!digest || !(size > 0)) {
      const full = await this.request(path, { headers: { accept } }, signal);
      const body = Buffer.from(await full.arrayBuffer());
      const { createHash } = await import('node:crypto');
      digest = this.ref.digest ?? `sha256:${createHash('sha256').update(body).digest('hex')}`;
      size = body.length;
    }
    if (this.ref.digest && digest !== this.ref.digest) throw new BerthError(Code.FailedPrecondition, `${this.ref.name}: registry answered digest ${digest}`);
    if (!media_type || media_type === 'application/octet-stream') throw new BerthError(Code.FailedPrecondition, `${this.ref.name}: registry sent no manifest media type`);
    return { media_type, digest, size };
  }

  /** A manifest or blob's bytes, from `offset` on when the registry takes a Range. */
  async open(desc: Descriptor, offset = 0, signal?: AbortSignal): Promise<BlobResponse> {
    const kind = isIndex(desc.media_type) || isManifest(desc.media_type) ? 'manifests' : 'blobs';
    const headers: Record<string, string> = kind === 'manifests' ? { accept: desc.media_type } : {};
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await this.request(`${kind}/${desc.digest}`, { headers }, signal);
    if (!res.body) throw new BerthError(Code.Unavailable, `${desc.digest}: empty response`);
    return { body: res.body, from: res.status === 206 ? offset : 0 };
  }

  /** A small document (manifest, index, config) whole, its digest checked. */
  async readAll(desc: Descriptor, signal?: AbortSignal): Promise<Buffer> {
    const { body } = await this.open(desc, 0, signal);
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of body) {
      n += c.length;
      if (n > desc.size) break;
      chunks.push(Buffer.from(c));
    }
    const data = Buffer.concat(chunks);
    const { createHash } = await import('node:crypto');
    const [alg] = desc.digest.split(':');
    const got = `${alg}:${createHash(alg!).update(data).digest('hex')}`;
    if (data.length !== desc.size || got !== desc.digest) {
      throw new BerthError(Code.FailedPrecondition, `${desc.digest}: registry sent ${n} bytes with digest ${got}, expected ${desc.size} bytes`);
    }
    return data;
  }
}
