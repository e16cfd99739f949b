// The registry client against a small in-process registry: resolve, Range resumes, Basic and
// Bearer auth, mirrors, and the error codes callers act on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Code, type BerthError } from '@berth/errdefs';
import { loadDockerConfig, parseChallenges } from './auth.js';
import { chainIds, childLabels, refKey } from './pull.js';
import { matches, parsePlatform } from './platform.js';
import { parseReference } from './reference.js';
import { Registry, type RegistryOptions } from './registry.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const code = (c: number, re?: RegExp) => (e: BerthError) => e.code === c && (!re || re.test(e.message));

test('references: docker.io names, hosts with ports, tags and digests', () => {
  assert.equal(parseReference('busybox').name, 'docker.io/library/busybox:latest');
  assert.equal(parseReference('user/app:1').name, 'docker.io/user/app:1');
  const r = parseReference('127.0.0.1:5000/library/busybox:latest');
  assert.deepEqual([r.host, r.repository, r.tag], ['127.0.0.1:5000', 'library/busybox', 'latest']);
  const d = `sha256:${'a'.repeat(64)}`;
  assert.equal(parseReference(`localhost/x@${d}`).digest, d);
  assert.throws(() => parseReference('UPPER/case'), code(Code.InvalidArgument));
  assert.throws(() => parseReference('x@sha256:nothex'), code(Code.InvalidArgument));
});

test('platforms: normalised and matched as containerd does', () => {
  assert.deepEqual(parsePlatform('linux/aarch64'), { os: 'linux', architecture: 'arm64' });
  assert.ok(matches([parsePlatform('linux/arm64')], { os: 'linux', architecture: 'arm64', variant: 'v8' }));
  assert.ok(!matches([parsePlatform('linux/arm64')], { os: 'linux', architecture: 'amd64' }));
  assert.ok(matches([parsePlatform('linux/arm')], { os: 'linux', architecture: 'arm', variant: 'v7' }));
  assert.throws(() => parsePlatform('a/b/c/d'), code(Code.InvalidArgument));
});

test("containerd's labels, ref keys and chain ids", () => {
  const l = (n: number) => ({ media_type: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${String(n).repeat(64)}`, size: 1 });
  const cfg = { media_type: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'c'.repeat(64)}`, size: 1 };
  assert.deepEqual(childLabels([cfg, l(1), l(2), l(1)]), {
    'containerd.io/gc.ref.content.config': cfg.digest,
    'containerd.io/gc.ref.content.l.0': l(1).digest,
    'containerd.io/gc.ref.content.l.1': l(2).digest,
    'containerd.io/gc.ref.content.l.2': l(1).digest,
  });
  const m = { media_type: 'application/vnd.docker.distribution.manifest.v2+json', digest: `sha256:${'d'.repeat(64)}`, size: 1 };
  assert.deepEqual(childLabels([m, m]), { 'containerd.io/gc.ref.content.m.0': m.digest, 'containerd.io/gc.ref.content.m.1': m.digest });
  assert.equal(refKey(l(1)), `layer-${l(1).digest}`);
  assert.equal(refKey(m), `manifest-${m.digest}`);
  // identity.ChainID: the first is the diff id, then sha256 of "<parent> <diff id>"
  const a = sha('a');
  const b = sha('b');
  assert.deepEqual(chainIds([a, b]), [a, sha(`${a} ${b}`)]);
});

test('auth: challenges and Docker config.json', () => {
  assert.deepEqual(parseChallenges('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'reg', scope: 'repository:a/b:pull' } },
  ]);
  assert.deepEqual(parseChallenges('Basic realm="x"'), [{ scheme: 'basic', params: { realm: 'x' } }]);
  const dir = mkdtempSync(join(tmpdir(), 'berth-auth-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: Buffer.from('u:p:q').toString('base64') }, 'r.example:5000': { username: 'a', password: 'b' } } }));
  const m = loadDockerConfig(join(dir, 'config.json'));
  assert.deepEqual(m.get('docker.io'), { username: 'u', password: 'p:q' });
  assert.deepEqual(m.get('r.example:5000'), { username: 'a', password: 'b' });
  assert.equal(loadDockerConfig(join(dir, 'missing.json')).size, 0);
});

/** A registry of one repository holding one manifest and one blob, with optional auth. */
async function fakeRegistry(auth: 'none' | 'basic' | 'bearer') {
  const blob = Buffer.alloc(100_000, 7);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', layers: [] }));
  const seen: string[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    seen.push(`${req.method} ${req.url} ${req.headers.range ?? ''}`);
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    if (req.url!.startsWith('/token')) {
      const ok = req.headers.authorization === `Basic ${Buffer.from('u:p').toString('base64')}`;
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      return res.end(ok ? JSON.stringify({ token: 'T0K' }) : '{}');
    }
    const authed =
      auth === 'none' ||
      (auth === 'basic' && req.headers.authorization === `Basic ${Buffer.from('u:p').toString('base64')}`) ||
      (auth === 'bearer' && req.headers.authorization === 'Bearer T0K');
    if (!authed) {
      res.writeHead(401, { 'www-authenticate': auth === 'basic' ? 'Basic realm="r"' : `Bearer realm="${base}/token",service="fake",scope="repository:repo/x:pull"` });
      return res.end();
    }
    if (req.url === '/v2/repo/x/manifests/latest') {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': sha(manifest), 'content-length': manifest.length });
      return res.end(req.method === 'HEAD' ? undefined : manifest);
    }
    if (req.url === `/v2/repo/x/blobs/${sha(blob)}`) {
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const from = m ? Number(m[1]) : 0;
      res.writeHead(m ? 206 : 200, { 'content-length': blob.length - from });
      return res.end(blob.subarray(from));
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { server, host, blob, manifest, seen, close: () => new Promise((r) => server.close(r)) };
}

const opts = (creds?: { username: string; password: string }, mirrors: string[] = []): RegistryOptions => ({
  plainHttp: () => true,
  mirrors: () => mirrors,
  credentials: () => creds,
});

async function readBody(s: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

test('registry: resolve, fetch from an offset, not found', async () => {
  const f = await fakeRegistry('none');
  try {
    const reg = new Registry(parseReference(`${f.host}/repo/x:latest`), opts());
    const d = await reg.resolve();
    assert.deepEqual(d, { media_type: 'application/vnd.oci.image.manifest.v1+json', digest: sha(f.manifest), size: f.manifest.length });
    const desc = { media_type: 'application/vnd.oci.image.layer.v1.tar', digest: sha(f.blob), size: f.blob.length };
    const r = await reg.open(desc, 60_000);
    assert.equal(r.from, 60_000);
    assert.deepEqual(await readBody(r.body), f.blob.subarray(60_000));
    assert.ok(f.seen.includes(`GET /v2/repo/x/blobs/${sha(f.blob)} bytes=60000-`));
    await assert.rejects(new Registry(parseReference(`${f.host}/repo/nosuch:1`), opts()).resolve(), code(Code.NotFound, /repo\/nosuch:1: not found/));
  } finally {
    await f.close();
  }
});

test('registry: Basic and Bearer auth answer the challenge; wrong or no credentials are Unauthenticated', async () => {
  for (const kind of ['basic', 'bearer'] as const) {
    const f = await fakeRegistry(kind);
    try {
      const ref = parseReference(`${f.host}/repo/x:latest`);
      assert.equal((await new Registry(ref, opts({ username: 'u', password: 'p' })).resolve()).digest, sha(f.manifest));
      await assert.rejects(new Registry(ref, opts({ username: 'u', password: 'wrong' })).resolve(), code(Code.Unauthenticated));
      await assert.rejects(new Registry(ref, opts()).resolve(), code(Code.Unauthenticated));
    } finally {
      await f.close();
    }
  }
});

/** A loopback port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

test('registry: a mirror is tried first, the registry when the mirror fails; nothing listening is Unavailable', async () => {
  const f = await fakeRegistry('none');
  const dead = `127.0.0.1:${await deadPort()}`;
  try {
    const viaMirror = new Registry(parseReference(`${dead}/repo/x:latest`), opts(undefined, [`http://${f.host}`]));
    assert.equal((await viaMirror.resolve()).digest, sha(f.manifest));
    const deadMirror = new Registry(parseReference(`${f.host}/repo/x:latest`), opts(undefined, [`http://${dead}`]));
    assert.equal((await deadMirror.resolve()).digest, sha(f.manifest));
    await assert.rejects(new Registry(parseReference(`${dead}/repo/x:latest`), opts()).resolve(), code(Code.Unavailable, /ECONNREFUSED/));
  } finally {
    await f.close();
  }
});
