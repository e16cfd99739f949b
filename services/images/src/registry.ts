// A client of the OCI distribution API (Docker registry v2) over Node's fetch: resolving a
// reference to a descriptor, fetching manifests and blobs (from an offset, to resume), with
// anonymous, Basic and Bearer-token auth, mirrors tried before the registry itself, and plain
// HTTP for the hosts that speak it. Errors are BerthErrors with the code a caller acts on:
// NotFound (no such image), Unavailable (cannot reach a registry), Unauthenticated (401).
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BerthError, Code, notFound } from '@berth/errdefs';
import { basic, parseChallenges, type Credentials } from './auth.js';
import { leanGet, NotLean, type LeanReply } from './blobget.js';
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
  body: AsyncIterable<Uint8Array>;
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

const redirects = [301, 302, 303, 307, 308];

/**
 * A GET whose body is a blob: through node:http(s) rather than fetch, because on this data path
 * fetch's web streams cost 2-3x the CPU (measured: 120 MiB took 250-550 ms of CPU through fetch,
 * 115-180 ms through http.get), and a pull unpacks on the same two cores. Redirects are followed
 * (Authorization only to the same origin), as fetch would.
 */
function getStream(url: string, headers: Record<string, string>, signal?: AbortSignal, hops = 0): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, { method: 'GET', headers, signal }, (res) => {
      const loc = res.headers.location;
      if (loc && redirects.includes(res.statusCode ?? 0) && hops < 5) {
        res.resume();
        const next = new URL(loc, u);
        const h = { ...headers };
        if (next.origin !== u.origin) delete h.authorization;
        getStream(next.toString(), h, signal, hops + 1).then(resolve, reject);
        return;
      }
      resolve(res);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A blob's GET read off its socket (blobget.ts: a fraction of node:http's CPU per byte), its
 * redirects followed as getStream does; a chunked answer is asked again through node:http.
 */
async function getBlob(url: string, headers: Record<string, string>, signal?: AbortSignal, hops = 0): Promise<Reply> {
  const u = new URL(url);
  let res: LeanReply;
  try {
    res = await leanGet(u, headers, signal);
  } catch (e) {
    if (e instanceof NotLean) return fromNode(await getStream(url, headers, signal, hops));
    throw e;
  }
  const loc = res.header('location');
  if (loc && redirects.includes(res.status) && hops < 5) {
    await res.discard();
    const next = new URL(loc, u);
    const h = { ...headers };
    if (next.origin !== u.origin) delete h.authorization;
    return getBlob(next.toString(), h, signal, hops + 1);
  }
  return res;
}

/** A request with a streamed body (a blob upload), through node:http(s). */
function sendBody(url: string, method: string, headers: Record<string, string>, body: NodeJS.ReadableStream, signal?: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, { method, headers, signal }, resolve);
    req.on('error', reject);
    body.on('error', (e) => req.destroy(e as Error));
    body.pipe(req);
  });
}

/** The part of a response the client reads, from fetch or from node:http. */
interface Reply {
  status: number;
  ok: boolean;
  header(name: string): string | null;
  body: AsyncIterable<Uint8Array> | null;
  discard(): Promise<void>;
}

const fromFetch = (res: Response): Reply => ({
  status: res.status,
  ok: res.ok,
  header: (n) => res.headers.get(n),
  body: res.body,
  discard: async () => void (await res.body?.cancel().catch(() => undefined)),
});

const fromNode = (res: IncomingMessage): Reply => ({
  status: res.statusCode ?? 0,
  ok: (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300,
  header: (n) => {
    const v = res.headers[n.toLowerCase()];
    return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
  },
  body: res,
  discard: async () => void res.destroy(),
});

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
  private async request(path: string, init: RequestInit & { headers: Record<string, string>; stream?: boolean }, signal?: AbortSignal): Promise<Reply> {
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

  private requestAt(base: string, path: string, init: RequestInit & { headers: Record<string, string>; stream?: boolean }, signal?: AbortSignal): Promise<Reply> {
    return this.send(base, `${base}/v2/${this.ref.repository}/${path}`, init, signal);
  }

  /** One request to `url` (of endpoint `base`), answering a 401's challenge once. */
  private async send(base: string, url: string, init: RequestInit & { headers: Record<string, string>; stream?: boolean; upload?: () => NodeJS.ReadableStream }, signal?: AbortSignal): Promise<Reply> {
    const method = init.method ?? 'GET';
    for (let attempt = 0; ; attempt++) {
      const headers = { ...init.headers };
      const a = this.auth.get(base);
      if (a) headers.authorization = a;
      let res: Reply;
      try {
        const { stream, upload, ...rest } = init;
        res = upload
          ? fromNode(await sendBody(url, method, headers, upload(), signal))
          : stream
            ? await getBlob(url, headers, signal)
            : fromFetch(await this.fetch(url, { ...rest, headers, signal, redirect: 'follow' }));
      } catch (e) {
        if (signal?.aborted) throw new BerthError(Code.Canceled, 'context canceled');
        throw new BerthError(Code.Unavailable, `failed to do request: ${method} "${url}": ${errnoOf(e)}`);
      }
      if (res.status === 401 && attempt === 0) {
        await res.discard();
        const header = await this.authorize(base, res.header('www-authenticate'), signal);
        if (header) {
          this.auth.set(base, header);
          continue;
        }
      }
      if (res.ok) return res;
      await res.discard();
      const what = `${method} "${url}"`;
      const verb = method === 'GET' || method === 'HEAD' ? 'pull' : 'push';
      if (res.status === 401) throw new BerthError(Code.Unauthenticated, `${verb} access denied for ${this.ref.host}/${this.ref.repository}: ${what}: 401 Unauthorized`);
      if (res.status === 403) throw new BerthError(Code.PermissionDenied, `${verb} access denied for ${this.ref.host}/${this.ref.repository}: ${what}: 403 Forbidden`);
      if (res.status === 404) throw notFound(`${this.ref.name}`);
      if (res.status === 400 || res.status === 405) throw new BerthError(Code.FailedPrecondition, `${what}: registry refused (${res.status})`);
      if (res.status === 416) throw new BerthError(Code.OutOfRange, `${what}: 416 Range Not Satisfiable`);
      if (res.status === 429 || res.status >= 500) throw new BerthError(Code.Unavailable, `${what}: unexpected status ${res.status}`);
      throw new BerthError(Code.Unknown, `${what}: unexpected status ${res.status}`);
    }
  }

  /** The Authorization header that answers a 401's challenge, or undefined when none can. */
  /** the token scope asked for when the challenge names none: pushing needs push too */
  private scope = 'pull';

  private async authorize(base: string, header: string | null, signal?: AbortSignal): Promise<string | undefined> {
    const creds = this.opts.credentials(this.ref.host);
    for (const c of parseChallenges(header)) {
      if (c.scheme === 'basic' && creds) return basic(creds);
      if (c.scheme === 'bearer' && c.params.realm) {
        const u = new URL(c.params.realm);
        if (c.params.service) u.searchParams.set('service', c.params.service);
        u.searchParams.set('scope', c.params.scope || `repository:${this.ref.repository}:${this.scope}`);
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
    const media_type = (res.header('content-type') ?? '').split(';')[0]!.trim();
    let digest = res.header('docker-content-digest') ?? this.ref.digest ?? '';
    let size = Number(res.header('content-length') ?? -1);
    if (!digest || !(size > 0)) {
      const full = await this.request(path, { headers: { accept } }, signal);
      const chunks: Buffer[] = [];
      for await (const c of full.body ?? []) chunks.push(Buffer.from(c));
      const body = Buffer.concat(chunks);
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
    const res = await this.request(`${kind}/${desc.digest}`, { headers, stream: kind === 'blobs' }, signal);
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

  // Pushing: to the registry itself (mirrors are for reading).
  private origin(): string {
    return this.endpoints().at(-1)!;
  }

  /** Whether the repository has the blob already (HEAD). */
  async hasBlob(digest: string, signal?: AbortSignal): Promise<boolean> {
    this.scope = 'pull,push';
    try {
      await this.requestAt(this.origin(), `blobs/${digest}`, { method: 'HEAD', headers: {} }, signal);
      return true;
    } catch (e) {
      if (e instanceof BerthError && e.code === Code.NotFound) return false;
      throw e;
    }
  }

  /**
   * Starts an upload; with `from` (another repository of this registry that has the blob) asks
   * the registry to mount it instead. Returns 'mounted', or the upload's location.
   */
  async startUpload(digest: string, from: string | undefined, signal?: AbortSignal): Promise<'mounted' | string> {
    this.scope = 'pull,push';
    const q = from ? `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}` : '';
    const res = await this.requestAt(this.origin(), `blobs/uploads/${q}`, { method: 'POST', headers: { 'content-length': '0' } }, signal);
    await res.discard();
    if (res.status === 201) return 'mounted';
    const loc = res.header('location');
    if (!loc) throw new BerthError(Code.FailedPrecondition, `${this.ref.name}: registry gave no upload location`);
    return new URL(loc, this.origin()).toString();
  }

  /** Finishes an upload with the whole blob in one PUT (the registry checks the digest). */
  async upload(location: string, desc: Descriptor, body: () => NodeJS.ReadableStream, signal?: AbortSignal): Promise<void> {
    const u = new URL(location);
    u.searchParams.set('digest', desc.digest);
    const res = await this.send(this.origin(), u.toString(), { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) }, upload: body }, signal);
    await res.discard();
  }

  /** Puts a manifest or index under `reference` (a digest, or the tag for the root). */
  async putManifest(reference: string, mediaType: string, data: Buffer, signal?: AbortSignal): Promise<void> {
    this.scope = 'pull,push';
    const res = await this.requestAt(this.origin(), `manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: data }, signal);
    await res.discard();
  }
}
