// Berth's server-side pull (berth.images.v1.Transfer/Pull) against the real stack and the local
// registry: the result is what `ctr images pull` makes (content and labels, snapshots, record);
// progress on the stream and on NATS; clear errors with nothing half-written left visible; a
// registry that dies in the middle of a layer is resumed without fetching any byte twice.
// A small proxy in front of the registry counts what it serves, asks for credentials, corrupts a
// blob or dies on request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { codec, method } from '@berth/api';
import { execFile } from 'node:child_process';
import { contentSet, ctr, natsWith, repo, run, shared, sleep, startStack, type Run, type Stack } from './harness.js';

/** bin/berth's command line (the built CLI), with ctr's environment variables set. */
function berth(env: Record<string, string>, ...args: string[]): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) =>
    execFile(process.execPath, [join(repo, 'packages/cli/dist/main.js'), ...args], { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr, ms: Date.now() - t0 }),
    ),
  );
}

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';
const [regHost, regPort] = registry.split(':') as [string, string];

interface Proxy {
  host: string;
  /** bytes of blob bodies served, by digest */
  served: Map<string, number>;
  requests: string[];
  /** drop every connection and stop listening for `ms` */
  kill(ms: number): Promise<void>;
  close(): Promise<void>;
  opts: ProxyOptions;
}

interface ProxyOptions {
  auth?: 'basic' | 'bearer';
  /** flip a byte in this blob's body */
  corrupt?: string;
  /** once this blob has sent this many bytes on one response, the registry "dies" for a while */
  dieAt?: { digest: string; bytes: number; downMs: number };
}

const creds = { username: 'puller', password: 's3cret' };
const basicOf = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

async function startProxy(opts: ProxyOptions = {}, port = 0): Promise<Proxy> {
  const served = new Map<string, number>();
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  let server!: Server;
  let dying = false;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    requests.push(`${req.method} ${req.url} ${req.headers.range ?? ''}`.trim());
    if (req.url!.startsWith('/token')) {
      const ok = req.headers.authorization === basicOf(creds.username, creds.password);
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      return res.end(ok ? JSON.stringify({ token: 'tok-123' }) : '{"errors":[]}');
    }
    if (p.opts.auth) {
      const want = p.opts.auth === 'basic' ? basicOf(creds.username, creds.password) : 'Bearer tok-123';
      if (req.headers.authorization !== want) {
        const challenge = p.opts.auth === 'basic' ? 'Basic realm="berth-test"' : `Bearer realm="http://${p.host}/token",service="berth-test",scope="repository:x:pull"`;
        res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' });
        return res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      }
    }
    const up = request({ host: regHost, port: Number(regPort), method: req.method, path: req.url, headers: { ...req.headers, authorization: '' } /* the client's Host: upload locations point back here */ }, (ur) => {
      res.writeHead(ur.statusCode!, ur.headers);
      const digest = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(req.url!)?.[1];
      let sent = 0;
      ur.on('data', (chunk: Buffer) => {
        if (dying) return void ur.destroy();
        if (digest && p.opts.corrupt === digest && sent === 0) {
          chunk = Buffer.from(chunk);
          chunk[0] ^= 0xff;
        }
        const die = p.opts.dieAt;
        if (digest && die?.digest === digest && sent + chunk.length >= die.bytes) {
          chunk = chunk.subarray(0, die.bytes - sent);
          const n = chunk.length;
          res.write(chunk, (err) => {
            if (!err) served.set(digest, (served.get(digest) ?? 0) + n);
            p.opts.dieAt = undefined;
            void p.kill(die.downMs);
          });
          ur.destroy();
          return;
        }
        sent += chunk.length;
        // counted once handed to the kernel (what is dropped with a killed connection was not served)
        const n = chunk.length;
        const more = res.write(chunk, (err) => {
          if (!err && digest) served.set(digest, (served.get(digest) ?? 0) + n);
        });
        if (!more) {
          ur.pause();
          res.once('drain', () => ur.resume());
        }
      });
      ur.on('end', () => res.end());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  const listen = async (at: number) => {
    server = createServer(handler);
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(at, '127.0.0.1', r));
    return (server.address() as AddressInfo).port;
  };
  const bound = await listen(port);
  const p: Proxy = {
    host: `127.0.0.1:${bound}`,
    served,
    requests,
    opts,
    async kill(ms) {
      const closed = new Promise((r) => server.close(r));
      // a FIN after what was handed over: the client gets every byte counted as served, then a
      // connection that ends in the middle of its responses
      dying = true;
      for (const s of sockets) s.end();
      setTimeout(() => {
        for (const s of sockets) s.destroy();
      }, 200).unref();
      await closed;
      await sleep(ms);
      dying = false;
      await listen(bound);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  return p;
}

interface PullMessage {
  pull_id: string;
  status: string;
  layers: { digest: string; media_type: string; offset: number; total: number; status: string }[];
  name: string;
  target: { digest: string; media_type: string; size: number } | null;
  subject: string;
}

/** Transfer.Pull through the socket: every progress message, or the status it failed with. */
function pull(sock: string, ns: string, req: Record<string, unknown>, which = 'Pull'): Promise<{ messages: PullMessage[]; error?: { code: number; details: string } }> {
  const m = method(`/berth.images.v1.Transfer/${which}`);
  const Req = codec(m.requestType);
  const Res = codec<PullMessage>(m.responseType);
  const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('containerd-namespace', ns);
  const messages: PullMessage[] = [];
  return new Promise((resolve) => {
    const call = c.makeServerStreamRequest(m.path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, Buffer.from(Req.encode(req)), md, { deadline: Date.now() + 120_000 });
    call.on('data', (b: Buffer) => messages.push(Res.decode(b)));
    call.on('error', (e: grpc.ServiceError) => {
      c.close();
      resolve({ messages, error: { code: e.code, details: e.details } });
    });
    call.on('end', () => {
      c.close();
      resolve({ messages });
    });
  });
}

/** A manifest as the registry serves it (OCI types). */
async function registryManifest(name: string): Promise<{ layers: { digest: string; size: number }[] }> {
  const r = await fetch(`http://${registry}/v2/library/${name}/manifests/latest`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return (await r.json()) as { layers: { digest: string; size: number }[] };
}

/** A loopback port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const lines = async (sock: string, ns: string, ...args: string[]) => (await ctr(sock, '-n', ns, ...args)).stdout;

/** Progress of the big image's pull: per-layer bytes on the way and at the end, on both channels. */
function checkProgress(stream: PullMessage[], onNats: PullMessage[]): void {
  const r = { messages: stream };
  const subject = 'berth.progress.it-node.watch-me';
  assert.equal(r.messages[0]!.subject, subject);
  assert.ok(onNats.length > 0 && onNats.every((m) => m.pull_id === 'watch-me'));
  const big = r.messages.flatMap((m) => m.layers).filter((l) => l.total > 30 << 20);
  // five 40 MiB layers, each seen on its way (bytes below the total) and at the end
  assert.equal(new Set(big.map((l) => l.digest)).size, 5);
  assert.ok(big.some((l) => l.offset > 0 && l.offset < l.total), 'a layer seen part way');
  const last = new Map(r.messages.flatMap((m) => m.layers).map((l) => [l.digest, l]));
  assert.ok([...last.values()].filter((l) => l.total > 30 << 20).every((l) => l.status === 'unpacked' && l.offset === l.total));
  assert.deepEqual(
    onNats.flatMap((m) => m.layers).filter((l) => l.total > 30 << 20 && l.status === 'unpacked').map((l) => l.digest).sort().filter((d, i, a) => a.indexOf(d) === i),
    [...new Set(big.map((l) => l.digest))].sort(),
  );
}

describe('server-side pull', () => {
  let stack: Stack;
  let registryUp = false;
  const tmp = mkdtempSync('/tmp/berth-pull-it-');
  let mirror: Proxy;
  let authed: Proxy;

  before(async () => {
    const reg = await run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
    registryUp = reg.code === 0;
    mirror = await startProxy();
    authed = await startProxy({ auth: 'basic' });
    // credentials from a Docker config.json, a mirror for a registry that does not answer
    writeFileSync(join(tmp, 'docker.json'), JSON.stringify({ auths: { [authed.host]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') } } }));
    writeFileSync(
      join(tmp, 'config.toml'),
      // isolated: a namespace takes no blob from another, so every pull here really downloads
      `[content]\nsharing_policy = "isolated"\n[images]\nregistry_config = "${join(tmp, 'docker.json')}"\nplain_http = ["${authed.host}", "mirrored.test:5000"]\n[images.mirrors]\n"mirrored.test:5000" = ["http://${mirror.host}"]\n`,
    );
    stack = await startStack({ config: join(tmp, 'config.toml') });
  });
  after(async () => {
    await stack?.stop();
    await mirror?.close();
    await authed?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('credentials from the registry config, a mirror, and the errors: each with its code, no record left', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const ns = 'errors';
    const code = grpc.status;
    // Basic auth with the config.json's credentials; then the same registry asking for a token
    assert.equal((await pull(stack.sock, ns, { ref: `${authed.host}/library/busybox:latest` })).error, undefined);
    authed.opts.auth = 'bearer';
    assert.equal((await pull(stack.sock, ns, { ref: `${authed.host}/library/busybox:latest`, skip_unpack: true })).error, undefined);
    assert.ok(authed.requests.some((r) => r.startsWith('GET /token?')));
    // wrong credentials given with the request
    const denied = await pull(stack.sock, ns, { ref: `${authed.host}/library/layered:latest`, username: 'puller', password: 'wrong' });
    assert.equal(denied.error?.code, code.UNAUTHENTICATED, JSON.stringify(denied.error));
    // a host served only through its mirror
    assert.equal((await pull(stack.sock, ns, { ref: 'mirrored.test:5000/library/busybox:latest' })).error, undefined);
    assert.ok(mirror.requests.some((r) => r.startsWith('HEAD /v2/library/busybox/manifests/latest')));

    const missing = await pull(stack.sock, ns, { ref: `${registry}/library/nosuch:latest`, plain_http: true });
    assert.equal(missing.error?.code, code.NOT_FOUND);
    assert.match(missing.error!.details, /failed to resolve reference "127.0.0.1:5000\/library\/nosuch:latest": .*not found/);
    const dead = await pull(stack.sock, ns, { ref: `127.0.0.1:${await deadPort()}/library/busybox:latest`, plain_http: true });
    assert.equal(dead.error?.code, code.UNAVAILABLE, JSON.stringify(dead.error));
    const platform = await pull(stack.sock, ns, { ref: `${registry}/library/multi:latest`, plain_http: true, platforms: ['linux/s390x'] });
    assert.equal(platform.error?.code, code.NOT_FOUND);
    assert.match(platform.error!.details, /no match for platform in manifest sha256:[0-9a-f]{64}: not found/);
    const bad = await pull(stack.sock, ns, { ref: 'nope//x', plain_http: true });
    assert.equal(bad.error?.code, code.INVALID_ARGUMENT);
    // a registry that sends other bytes than the digest names
    // (this runs first: no namespace on the node has the layered image's blobs yet)
    const layered = await registryManifest('layered');
    const liar = await startProxy({ corrupt: layered.layers[4]!.digest });
    try {
      const wrong = await pull(stack.sock, ns, { ref: `${liar.host}/library/layered:latest`, plain_http: true });
      assert.equal(wrong.error?.code, code.FAILED_PRECONDITION, JSON.stringify(wrong.error));
      assert.match(wrong.error!.details, new RegExp(`failed to fetch ${layered.layers[4]!.digest}: .*unexpected commit digest`));
    } finally {
      await liar.close();
    }
    // none of the failures left an image record or an unpack in progress
    assert.deepEqual((await lines(stack.sock, ns, 'images', 'ls', '-q')).trim().split('\n').sort(), [`${authed.host}/library/busybox:latest`, 'mirrored.test:5000/library/busybox:latest']);
    assert.doesNotMatch(await lines(stack.sock, ns, 'snapshots', 'ls'), /extract-/);
    // what the failed pulls wrote is held by their leases, which expire
    const leases = await lines(stack.sock, ns, 'leases', 'ls');
    assert.match(leases, /containerd\.io\/gc\.expire=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/);
  });

  test('berth pull makes what ctr pull makes: content and labels, snapshots, record; check says complete', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const steps: [string[], Record<string, unknown>][] = [
      [[`${registry}/library/busybox:latest`], { ref: `${registry}/library/busybox:latest` }],
      [[`${registry}/library/layered:latest`], { ref: `${registry}/library/layered:latest` }],
      [['--platform', 'linux/arm64', `${registry}/library/multi:latest`], { ref: `${registry}/library/multi:latest`, platforms: ['linux/arm64'] }],
      [['--all-platforms', `${registry}/library/multi:latest`], { ref: `${registry}/library/multi:latest`, all_platforms: true }],
    ];
    for (const [ctrArgs, req] of steps) {
      const b = await pull(stack.sock, 'by-berth', { plain_http: true, ...req });
      assert.equal(b.error, undefined, JSON.stringify(b.error));
      assert.equal(b.messages.at(-1)?.status, 'done');
      const c = await ctr(stack.sock, '-n', 'by-ctr', 'images', 'pull', '--plain-http', ...ctrArgs);
      assert.equal(c.code, 0, c.stderr);
    }
    assert.deepEqual(contentSet(await ctr(stack.sock, '-n', 'by-berth', 'content', 'ls')), contentSet(await ctr(stack.sock, '-n', 'by-ctr', 'content', 'ls')));
    assert.equal(await lines(stack.sock, 'by-berth', 'snapshots', 'ls'), await lines(stack.sock, 'by-ctr', 'snapshots', 'ls'));
    const check = await lines(stack.sock, 'by-berth', 'images', 'check');
    assert.equal(check, await lines(stack.sock, 'by-ctr', 'images', 'check'));
    assert.equal((check.match(/complete/g) ?? []).length, 3);
    // the record: same name, target and (no) labels
    assert.equal(await lines(stack.sock, 'by-berth', 'images', 'ls'), await lines(stack.sock, 'by-ctr', 'images', 'ls'));
    // ctr's lease went with its command, ours with the pull
    assert.equal(await lines(stack.sock, 'by-berth', 'leases', 'ls', '-q'), '');
    // and the image is usable as ctr's is
    const c = await ctr(stack.sock, '-n', 'by-berth', 'containers', 'create', `${registry}/library/layered:latest`, 'c1');
    assert.equal(c.code, 0, c.stderr);
    assert.match(await lines(stack.sock, 'by-berth', 'snapshots', 'ls'), /^c1\s+sha256:\S+\s+Active/m);
  });

  test('the registry dies in the middle of a layer: the pull resumes with a Range and no byte is served twice; progress on the stream and on NATS', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    // nothing on the node has the big image's blobs yet: every byte comes through the proxy
    const manifest = await registryManifest('big');
    const victim = manifest.layers[3]!;
    const proxy = await startProxy({ dieAt: { digest: victim.digest, bytes: 17 << 20, downMs: 1500 } });
    const nc = await natsWith(stack.natsUrl, stack.credentials('subscriber'));
    const onNats: PullMessage[] = [];
    const Res = codec<PullMessage>('berth.images.v1.PullProgress');
    const sub = nc.subscribe('berth.progress.>');
    void (async () => {
      for await (const m of sub) onNats.push(Res.decode(m.data));
    })();
    await nc.flush();
    try {
      const r = await pull(stack.sock, 'resume', { ref: `${proxy.host}/library/big:latest`, plain_http: true, pull_id: 'watch-me' });
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      assert.ok(proxy.requests.includes(`GET /v2/library/big/blobs/${victim.digest} bytes=${17 << 20}-`), proxy.requests.join('\n'));
      for (const l of manifest.layers) assert.equal(proxy.served.get(l.digest), l.size, `${l.digest}: served once`);
      assert.match(await lines(stack.sock, 'resume', 'images', 'check'), /big:latest .*complete \(7\/7\)/);
      await sleep(200);
      checkProgress(r.messages, onNats);
    } finally {
      sub.unsubscribe();
      await nc.close();
      await proxy.close();
    }
  });

  test('berth pull, images, rmi: plain lines off a terminal, bars on one; CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const env = { CONTAINERD_ADDRESS: stack.sock, CONTAINERD_NAMESPACE: 'cli' };
    const ref = `${registry}/library/layered:latest`;
    const p = await berth(env, 'pull', '--plain-http', ref);
    assert.equal(p.code, 0, p.stderr);
    // every layer's way to unpacked, one line per change of state, then the summary
    assert.equal((p.stdout.match(/^layer-sha256:[0-9a-f]{64}: unpacked /gm) ?? []).length, 5, p.stdout);
    assert.match(p.stdout, /^127\.0\.0\.1:5000\/library\/layered:latest: sha256:[0-9a-f]{64}\ndone: \d+\.\d\ds \(/m);
    assert.equal((await berth(env, 'images', '-q')).stdout, `${ref}\n`);
    const table = await berth({}, 'images', '-a', stack.sock, '-n', 'cli');
    assert.match(table.stdout, /^REF\s+TYPE\s+DIGEST\s+CREATED\s+LABELS\n/);
    assert.match(table.stdout, /layered:latest\s+application\/vnd\.oci\.image\.manifest\.v1\+json\s+sha256:/);
    assert.match(await lines(stack.sock, 'cli', 'images', 'check'), /layered:latest .*complete \(6\/6\)/);
    const missing = await berth(env, 'pull', '--plain-http', `${registry}/library/nosuch:1`);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^berth: failed to resolve reference "127\.0\.0\.1:5000\/library\/nosuch:1": .*not found$/m);
    // on a terminal: a bar per blob with bytes, speed and ETA (through script(1)'s pty)
    const tty = await run('script', ['-qec', `${process.execPath} ${join(repo, 'packages/cli/dist/main.js')} pull -a ${stack.sock} -n cli-tty --plain-http ${registry}/library/busybox:latest`, '/dev/null']);
    assert.equal(tty.code, 0, tty.stdout);
    assert.match(tty.stdout, /layer-383e31fad586\s+\|[\u2588\u2591]+\| (unpacking|unpacked|downloaded)\s+1\.0 MiB\/1\.0 MiB/);
    assert.equal((await berth(env, 'rmi', ref)).stdout, `${ref}\n`);
    assert.equal((await berth(env, 'images', '-q')).stdout, '');
    const gone = await berth(env, 'rmi', ref);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /unable to delete .*layered:latest: image ".*layered:latest": not found/);
  });

  test('push: blobs the repository lacks are mounted from their source repository or uploaded, the tag last; a second push sends nothing', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const src = `${registry}/library/busybox:latest`;
    assert.equal((await pull(stack.sock, 'push', { ref: src, plain_http: true })).error, undefined);
    const manifest = await registryManifest('busybox');
    const cfg = JSON.parse((await ctr(stack.sock, '-n', 'push', 'content', 'get', (await lines(stack.sock, 'push', 'images', 'ls')).match(/busybox:latest\s+\S+\s+(sha256:\S+)/)![1]!)).stdout).config.digest as string;
    // the config forgets where it came from (so it is uploaded); the layer remembers (so it is mounted)
    assert.equal((await ctr(stack.sock, '-n', 'push', 'content', 'label', cfg, 'containerd.io/distribution.source.127.0.0.1=')).code, 0);
    const proxy = await startProxy();
    const repo = `pushed/bb-${process.pid}`;
    try {
      const r = await pull(stack.sock, 'push', { name: src, ref: `${proxy.host}/${repo}:v1`, plain_http: true }, 'Push');
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      const final = new Map(r.messages.flatMap((m) => m.layers).map((l) => [l.digest, l.status]));
      assert.equal(final.get(manifest.layers[0]!.digest), 'mounted');
      assert.equal(final.get(cfg), 'uploaded');
      const reqs = proxy.requests.join('\n');
      assert.match(reqs, new RegExp(`POST /v2/${repo}/blobs/uploads/\\?mount=${manifest.layers[0]!.digest.replace(':', '%3A')}&from=library%2Fbusybox`));
      assert.match(reqs, new RegExp(`PUT /v2/${repo}/blobs/uploads/\\S+digest=${cfg.replace(':', '%3A')}`));
      assert.ok(proxy.requests.at(-1)!.startsWith(`PUT /v2/${repo}/manifests/v1`), 'the tag is put last');
      // what a client pulls from there is the image
      const c = await ctr(stack.sock, '-n', 'pushcheck', 'images', 'pull', '--plain-http', `${registry}/${repo}:v1`);
      assert.equal(c.code, 0, c.stderr);
      assert.match(await lines(stack.sock, 'pushcheck', 'images', 'check'), /complete \(2\/2\)/);
      // again: the repository has everything, no upload starts
      const before = proxy.requests.length;
      const again = await pull(stack.sock, 'push', { name: src, ref: `${proxy.host}/${repo}:v1`, plain_http: true }, 'Push');
      assert.equal(again.error, undefined);
      const later = proxy.requests.slice(before);
      assert.equal(later.filter((q) => q.startsWith('POST') || q.includes('/blobs/uploads/')).length, 0, later.join('\n'));
      const final2 = new Map(again.messages.flatMap((m) => m.layers).map((l) => [l.digest, l.status]));
      assert.deepEqual([final2.get(cfg), final2.get(manifest.layers[0]!.digest)], ['exists', 'exists']);
      const missing = await pull(stack.sock, 'push', { name: 'nosuch:1', ref: `${proxy.host}/${repo}:v2`, plain_http: true }, 'Push');
      assert.equal(missing.error?.code, grpc.status.NOT_FOUND);
    } finally {
      await proxy.close();
    }
  });

  test('two pulls of one image at once in one namespace: each blob fetched once, both complete', async (t) => {
    if (!registryUp) return t.skip('no local registry');
    const manifest = await registryManifest('big');
    const proxy = await startProxy();
    try {
      const ref = `${proxy.host}/library/big:latest`;
      const [a, b] = await Promise.all([pull(stack.sock, 'twice', { ref, plain_http: true }), pull(stack.sock, 'twice', { ref, plain_http: true })]);
      assert.equal(a.error, undefined, JSON.stringify(a.error));
      assert.equal(b.error, undefined, JSON.stringify(b.error));
      for (const l of manifest.layers) assert.equal(proxy.served.get(l.digest), l.size, `${l.digest} fetched once`);
      assert.match(await lines(stack.sock, 'twice', 'images', 'check'), /big:latest .*complete \(7\/7\)/);
    } finally {
      await proxy.close();
    }
  });
});
