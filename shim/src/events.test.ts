import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { codec, fromAny, service } from '@berth/api';
import { TtrpcServer, serveService } from '@berth/ttrpc';
import { Forwarder } from './events.js';

const forwardRequest = codec('containerd.services.events.ttrpc.v1.ForwardRequest');

/** The tasks service's end: each forwarded event's topic and container id, in order of arrival. */
async function endpoint(path: string): Promise<{ got: string[]; close(): Promise<void> }> {
  const got: string[] = [];
  const server = new TtrpcServer();
  serveService(server, service('containerd.services.events.ttrpc.v1.Events'), {
    Forward: (req: any) => {
      got.push(`${req.envelope.topic} ${(fromAny(req.envelope.event) as { container_id: string }).container_id}`);
    },
  });
  await server.listen(path);
  return { got, close: () => server.close({ timeoutMs: 500 }) };
}

const until = async (what: () => boolean) => {
  for (let i = 0; i < 300 && !what(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(what(), 'in time');
};

test('forwarder: events wait in the spool while the endpoint is away, go in order, and a new host sends only what was not delivered', async () => {
  const dir = mkdtempSync('/tmp/berth-fwd-');
  const spool = join(dir, 'events');
  const sock = join(dir, 'ev.sock');
  const address = `unix://${sock}`;
  const opts = { minDelayMs: 10, maxDelayMs: 20, timeoutMs: 1000 };
  try {
    let ep = await endpoint(sock);
    const f1 = new Forwarder(spool, opts);
    f1.publish('k1', address, 'ns', '/tasks/create', { container_id: 'a' });
    f1.publish('k1', address, 'ns', '/tasks/start', { container_id: 'a' });
    await until(() => ep.got.length === 2);
    await ep.close();
    f1.publish('k1', address, 'ns', '/tasks/exit', { container_id: 'a' });
    f1.publish('k2', address, 'ns', '/tasks/create', { container_id: 'b' });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(f1.pending(), 2);
    f1.close(); // the host goes with two events undelivered

    ep = await endpoint(sock);
    const f2 = new Forwarder(spool, opts);
    f2.resumeAll();
    await until(() => ep.got.length === 2);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(ep.got.sort(), ['/tasks/create b', '/tasks/exit a']);
    // delivered and retired: the container's log goes
    f2.retire('k1');
    f2.retire('k2');
    await until(() => readdirSync(spool).length === 0);
    f2.close();
    await ep.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('forwarder: the spool folder of an earlier host (a file per event) is sent, in order, and removed', async () => {
  const dir = mkdtempSync('/tmp/berth-fwd-');
  const spool = join(dir, 'events');
  const sock = join(dir, 'ev.sock');
  try {
    const old = join(spool, 'k9');
    mkdirSync(old, { recursive: true });
    writeFileSync(join(old, 'address'), `unix://${sock}`);
    ['/tasks/start', '/tasks/exit'].forEach((topic, i) => {
      const request = forwardRequest.encode({
        envelope: { timestamp: { seconds: 1, nanos: i }, namespace: 'ns', topic, event: { type_url: topic === '/tasks/exit' ? 'containerd.events.TaskExit' : 'containerd.events.TaskStart', value: Buffer.from([0x0a, 0x01, 0x63]) } },
      });
      const head = Buffer.alloc(2);
      head.writeUInt16BE(2);
      writeFileSync(join(old, String(i).padStart(12, '0')), Buffer.concat([head, Buffer.from('ns'), request]));
    });
    const ep = await endpoint(sock);
    const f = new Forwarder(spool, { minDelayMs: 10, maxDelayMs: 20 });
    f.resumeAll();
    await until(() => ep.got.length === 2);
    assert.deepEqual(ep.got, ['/tasks/start c', '/tasks/exit c']);
    assert.deepEqual(readdirSync(spool), ['k9.log']);
    f.close();
    await ep.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('forwarder: a container\'s events go without waiting for each answer, in order; a failed one goes again with those after it, in order', async () => {
  const dir = mkdtempSync('/tmp/berth-fwd-');
  const spool = join(dir, 'events');
  const sock = join(dir, 'ev.sock');
  const address = `unix://${sock}`;
  try {
    // an endpoint that answers only when told, commits in arrival order, and after a failed
    // event fails the ones behind it until its queue is empty (as the tasks service does)
    const arrived: string[] = [];
    const committed: string[] = [];
    let release!: () => void;
    let held = new Promise<void>((r) => (release = r));
    let failOnce = 'e3';
    let broken = false;
    let queued = 0;
    let tail: Promise<unknown> = Promise.resolve();
    const server = new TtrpcServer();
    serveService(server, service('containerd.services.events.ttrpc.v1.Events'), {
      Forward: (req: any) => {
        const id = (fromAny(req.envelope.event) as { container_id: string }).container_id;
        arrived.push(id);
        queued++;
        const done = tail
          .then(async () => {
            await held;
            if (broken) throw new Error('behind a failed one');
            if (id === failOnce) {
              failOnce = '';
              throw new Error('store unavailable');
            }
            committed.push(id);
          })
          .catch((e) => {
            broken = true;
            throw e;
          })
          .finally(() => {
            if (--queued === 0) broken = false;
          });
        tail = done.catch(() => undefined);
        return done;
      },
    });
    await server.listen(sock);
    const f = new Forwarder(spool, { minDelayMs: 10, maxDelayMs: 20, timeoutMs: 2000 });
    for (const id of ['e1', 'e2', 'e3', 'e4', 'e5']) f.publish('k1', address, 'ns', '/tasks/exit', { container_id: id });
    // all five are out before any is answered
    await until(() => arrived.length === 5);
    assert.deepEqual(arrived, ['e1', 'e2', 'e3', 'e4', 'e5']);
    assert.deepEqual(committed, []);
    release();
    await until(() => f.pending() === 0);
    assert.deepEqual(committed, ['e1', 'e2', 'e3', 'e4', 'e5'], 'committed once each, in order');
    assert.deepEqual(arrived.slice(5), ['e3', 'e4', 'e5'], 'sent again from the failed one');
    held = Promise.resolve();
    f.close();
    await server.close({ timeoutMs: 500 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
