// `ctr shim` is Go's ttrpc client for a shim's Task service: it finds the socket from
// --address, --namespace and --id the way containerd names shim sockets, so our server
// listening there is called exactly as a stock shim would be.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { service } from '@berth/api';
import { failedPrecondition, notFound } from '@berth/errdefs';
import { TtrpcServer, serveService, type ServerContext } from './index.js';

const run = promisify(execFile);
const available = existsSync('/usr/bin/ctr') && process.getuid?.() === 0;

describe('ctr shim against our server', { skip: !available && 'needs root and ctr', timeout: 30_000 }, () => {
  const ns = `berth-ttrpc-${process.pid}`;
  const id = `fake${Date.now().toString(36)}`;
  let dir: string;
  let address: string;
  let server: TtrpcServer;
  let sock: string;
  const calls: { method: string; req: any; ctx: ServerContext }[] = [];

  before(async () => {
    dir = mkdtempSync('/tmp/berth-ttrpc-ctr-');
    address = join(dir, 'containerd.sock');
    sock = `/run/containerd/s/${createHash('sha256').update(join(address, ns, id)).digest('hex')}`;
    server = new TtrpcServer();
    serveService(server, service('containerd.task.v2.Task'), {
      State: (req: any, ctx) => {
        calls.push({ method: 'State', req, ctx });
        if (req.id !== id) throw notFound(`container ${req.id}`);
        return { id: req.id, bundle: '/b/' + req.id, pid: 4242, status: 'RUNNING', stdout: '/fifo/out', exit_status: 0 };
      },
      Start: (req: any, ctx) => {
        calls.push({ method: 'Start', req, ctx });
        return { pid: 4243 };
      },
      Delete: (req: any, ctx) => {
        calls.push({ method: 'Delete', req, ctx });
        if (req.exec_id === '' && req.id === 'busy') throw failedPrecondition('task must be stopped before deletion');
        return { pid: 4242, exit_status: 3 };
      },
    });
    await server.listen(sock);
  });

  after(async () => {
    await server?.close({ timeoutMs: 500 });
    rmSync(sock, { force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  const ctr = (...args: string[]) => run('ctr', ['--address', address, '--namespace', ns, 'shim', '--id', id, ...args], { timeout: 10_000 });

  test('state: Go decodes our response', async () => {
    const { stdout } = await ctr('state');
    const st = JSON.parse(stdout);
    assert.equal(st.id, id);
    assert.equal(st.pid, 4242);
    assert.equal(st.bundle, `/b/${id}`);
    assert.equal(st.stdout, '/fifo/out');
    assert.equal(st.status, 2, 'RUNNING as the Go enum'); // containerd.v1.types.Status RUNNING = 2
    assert.equal(calls.at(-1)!.req.id, id);
  });

  test('start and delete: requests decoded here, responses printed by ctr', async () => {
    const start = await ctr('start', 'x0'); // ctr sends its argument as the id
    assert.equal(start.stderr, '');
    assert.equal(calls.at(-1)!.method, 'Start');
    assert.equal(calls.at(-1)!.req.id, 'x0');
    const del = await ctr('delete', 'x1');
    assert.match(del.stdout, /container deleted and returned exit status 3/);
    assert.equal(calls.at(-1)!.req.id, 'x1');
  });

  test('our errors reach Go as gRPC statuses with their message', async () => {
    await assert.rejects(ctr('delete', 'busy'), (e: any) => {
      assert.match(e.stderr, /task must be stopped before deletion: failed precondition/);
      return true;
    });
  });
});
