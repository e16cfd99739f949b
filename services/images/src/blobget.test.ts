// The socket-level blob GET: framings a registry's answer has, a connection cut mid-body, an
// abort, and (through the registry client) a chunked answer and a redirect to another origin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer as httpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { leanGet, NotLean, recycle } from './blobget.js';
import { parseReference } from './reference.js';
import { Registry } from './registry.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const pattern = (n: number) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 11)) & 255;
  return b;
};

/** A raw TCP server: each connection gets `serve(socket, requestHead)`. */
async function rawServer(serve: (s: Socket, head: string) => void): Promise<{ url: (p: string) => URL; heads: string[]; close: () => Promise<void> }> {
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    let got = '';
    let served = false;
    s.on('data', (d) => {
      if (served) return;
      got += d.toString('latin1');
      const i = got.indexOf('\r\n\r\n');
      if (i < 0) return;
      served = true;
      heads.push(got.slice(0, i));
      serve(s, heads.at(-1)!);
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (p) => new URL(`http://127.0.0.1:${port}${p}`),
    heads,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** Writes `data` in pieces of `piece` bytes, a turn apart (so reads land at many offsets). */
async function dribble(s: Socket, data: Buffer, piece: number): Promise<void> {
  for (let i = 0; i < data.length; i += piece) {
    if (!s.write(data.subarray(i, i + piece))) await new Promise((r) => s.once('drain', r));
    if ((i / piece) % 8 === 0) await new Promise((r) => setImmediate(r));
  }
}

async function all(body: AsyncIterable<Buffer>, sizes: number[] = []): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) {
    sizes.push(c.length);
    parts.push(Buffer.from(c));
  }
  return Buffer.concat(parts);
}

test('a Content-Length body after a 100 Continue: whole, in chunks of at most 1 MiB, headers and request as sent', async () => {
  const data = pattern((3 << 20) + 12345);
  const srv = await rawServer((s) => {
    s.write('HTTP/1.1 100 Continue\r\n\r\n');
    s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\nX-Twice: a\r\nx-twice: b\r\n\r\n`);
    void dribble(s, data, 50_000);
  });
  try {
    const r = await leanGet(srv.url('/v2/x/blobs/y?q=1'), { range: 'bytes=0-', authorization: 'Bearer t' });
    assert.equal(r.status, 200);
    assert.equal(r.ok, true);
    assert.equal(r.header('Content-Length'), String(data.length));
    assert.equal(r.header('x-twice'), 'a, b');
    const sizes: number[] = [];
    assert.ok((await all(r.body, sizes)).equals(data));
    assert.ok(sizes.every((n) => n > 0 && n <= 1 << 20), String(sizes));
    assert.match(srv.heads[0]!, /^GET \/v2\/x\/blobs\/y\?q=1 HTTP\/1\.1\r\n/);
    assert.match(srv.heads[0]!, /\r\nrange: bytes=0-\r\n/);
    assert.match(srv.heads[0]!, /\r\nauthorization: Bearer t(\r\n|$)/);
    // a header that would end the request early is refused, not sent
    await assert.rejects(leanGet(srv.url('/x'), { range: 'bytes=0-\r\nx: y' }), /line break/);
  } finally {
    await srv.close();
  }
});

test('a body without Content-Length ends with the connection; an error status comes with its headers', async () => {
  const data = pattern(2_500_000);
  const srv = await rawServer((s, head) => {
    if (head.startsWith('GET /missing')) {
      s.end('HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}');
      return;
    }
    s.write('HTTP/1.0 200 OK\r\n\r\n');
    void dribble(s, data, 65_536).then(() => s.end());
  });
  try {
    const r = await leanGet(srv.url('/blob'), {});
    assert.ok((await all(r.body)).equals(data));
    const m = await leanGet(srv.url('/missing'), {});
    assert.deepEqual([m.status, m.ok, m.header('content-length')], [404, false, '2']);
    await m.discard();
  } finally {
    await srv.close();
  }
});

test('a connection cut mid-body: every byte that came is handed over, then an error (the caller resumes from there)', async () => {
  const data = pattern(3 << 20);
  const cut = (2 << 20) + 777;
  const srv = await rawServer((s) => {
    s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\n\r\n`);
    void dribble(s, data.subarray(0, cut), 40_000).then(() => s.end());
  });
  try {
    const r = await leanGet(srv.url('/blob'), {});
    const got: Buffer[] = [];
    await assert.rejects(
      (async () => {
        for await (const c of r.body) got.push(Buffer.from(c));
      })(),
      /connection closed with 1047799 bytes of the body still to come/,
    );
    assert.ok(Buffer.concat(got).equals(data.subarray(0, cut)));
  } finally {
    await srv.close();
  }
});

test('an abort ends a body that waits for bytes; nothing listening is the connect error', async () => {
  const srv = await rawServer((s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc'));
  try {
    const ac = new AbortController();
    const r = await leanGet(srv.url('/blob'), {}, ac.signal);
    const it = r.body[Symbol.asyncIterator]();
    setTimeout(() => ac.abort(new Error('stop here')), 20);
    await assert.rejects(
      (async () => {
        for (let n = await it.next(); !n.done; n = await it.next());
      })(),
      /stop here/,
    );
  } finally {
    await srv.close();
  }
  const dead = createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const port = (dead.address() as AddressInfo).port;
  await new Promise((r) => dead.close(r));
  await assert.rejects(leanGet(new URL(`http://127.0.0.1:${port}/x`), {}), /ECONNREFUSED/);
});

test('through the registry client: a chunked answer is read through node:http; a redirect to another origin loses the Authorization', async () => {
  const blob = pattern(1_500_000);
  const seen: { url: string; auth?: string }[] = [];
  const other = httpServer((req, res) => {
    seen.push({ url: `other ${req.url}`, auth: req.headers.authorization });
    res.writeHead(200, { 'transfer-encoding': 'chunked' });
    res.write(blob.subarray(0, 700_000));
    res.end(blob.subarray(700_000));
  });
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  const otherPort = (other.address() as AddressInfo).port;
  const reg = httpServer((req, res) => {
    seen.push({ url: req.url!, auth: req.headers.authorization });
    if (req.url!.includes('/blobs/') && !req.headers.authorization) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' });
      return res.end();
    }
    res.writeHead(307, { location: `http://127.0.0.1:${otherPort}/store/blob` });
    res.end();
  });
  await new Promise<void>((r) => reg.listen(0, '127.0.0.1', r));
  try {
    const host = `127.0.0.1:${(reg.address() as AddressInfo).port}`;
    const r = new Registry(parseReference(`${host}/repo/x:latest`), { plainHttp: () => true, mirrors: () => [], credentials: () => ({ username: 'u', password: 'p' }) });
    const desc = { media_type: 'application/vnd.oci.image.layer.v1.tar', digest: sha(blob), size: blob.length };
    const { body, from } = await r.open(desc);
    assert.equal(from, 0);
    assert.ok((await all(body as AsyncIterable<Buffer>)).equals(blob));
    const auth = `Basic ${Buffer.from('u:p').toString('base64')}`;
    // asked at the registry (the challenge answered), redirected; asked elsewhere twice: the
    // lean read saw chunked and node:http asked again; never with the registry's credentials
    assert.deepEqual(seen, [
      { url: `/v2/repo/x/blobs/${desc.digest}`, auth: undefined },
      { url: `/v2/repo/x/blobs/${desc.digest}`, auth },
      { url: 'other /store/blob', auth: undefined },
      { url: 'other /store/blob', auth: undefined },
    ]);
    assert.ok(new NotLean('x') instanceof Error);
  } finally {
    await new Promise((r) => reg.close(r));
    await new Promise((r) => other.close(r));
  }
});

test('buffers given back take later reads; those not given back are never written again', async () => {
  const data = [pattern(2_200_000), pattern(2_300_000).reverse(), pattern(2_100_000).fill(9, 5000, 9000)];
  let i = 0;
  const srv = await rawServer((s) => {
    const d = data[i++]!;
    s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${d.length}\r\n\r\n`);
    void dribble(s, d, 100_000);
  });
  try {
    const read = async () => {
      const chunks: Buffer[] = [];
      for await (const c of (await leanGet(srv.url('/b'), {})).body) chunks.push(c);
      return chunks;
    };
    const kept = await read();
    const keptCopy = Buffer.concat(kept);
    assert.ok(keptCopy.equals(data[0]!));
    const given = await read();
    assert.ok(Buffer.concat(given).equals(data[1]!));
    for (const c of given) recycle(c);
    const third = await read();
    assert.ok(Buffer.concat(third).equals(data[2]!));
    // the third body came in the second's buffers; the first's, never given back, are as they were
    assert.ok(third.some((c) => given.some((g) => g.buffer === c.buffer)));
    assert.ok(Buffer.concat(kept).equals(keptCopy));
    recycle(Buffer.alloc(1 << 20)); // not one of ours: ignored
  } finally {
    await srv.close();
  }
});
