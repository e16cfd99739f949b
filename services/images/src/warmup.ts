// Node loads fetch's HTTP client (undici: its dispatcher, pool and parser, ~90 ms of CPU here)
// on the first fetch, which would be the first pull's resolve, on its critical path. One HEAD
// and one GET to a throwaway server on the loopback at start pay for it instead.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export async function warmUpFetch(): Promise<void> {
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(req.method === 'HEAD' ? undefined : '{}');
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    await (await fetch(url, { method: 'HEAD' })).arrayBuffer();
    await (await fetch(url, { headers: { accept: 'application/json' } })).json();
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}
