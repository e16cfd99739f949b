// Records against the real stack, beside the reference containerd where it runs: namespaces
// validated and created as containerd does, leases that own their resources, one winner among
// concurrent creates, and events that follow their records exactly once, even across a crash
// between commit and publish.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { ctr, natsWith, repo, run, startReference, startStack, until, type Reference, type Stack } from './harness.js';
import { metadata, outcome, unary, writeBlob } from './grpc.js';

const L = (m: string) => `/containerd.services.leases.v1.Leases/${m}`;

describe('records: namespaces, leases, events', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  const faults = join('/tmp', `berth-faults-${process.pid}`);

  before(async () => {
    // the fault-injection hook (see @berth/bus outbox.ts): armed only by writing this file
    process.env.BERTH_FAULTS_FILE = faults;
    [stack, ref] = await Promise.all([startStack(), startReference()]);
  });

  after(async () => {
    await stack?.stop();
    await ref?.stop();
  });

  const socks = () => [stack.sock, ...(ref ? [ref.sock] : [])];

  test('a namespace that is not an identifier is refused as containerd refuses it', async () => {
    for (const ns of ['a/b', '..', 'a..b', 'x'.repeat(77)]) {
      const got = [];
      for (const sock of socks()) {
        const rs = await Promise.all([ctr(sock, '-n', ns, 'leases', 'create'), ctr(sock, '-n', ns, 'images', 'ls'), ctr(sock, '-n', ns, 'content', 'ls')]);
        for (const r of rs) assert.notEqual(r.code, 0, `${ns} on ${sock}: ${r.stdout}`);
        got.push(rs.map((r) => `${r.code} ${r.stderr.trim()}`));
      }
      assert.match(got[0]![0]!, /namespace validation: identifier /);
      if (ref) assert.deepEqual(got[0], got[1], ns);
    }
    assert.doesNotMatch((await ctr(stack.sock, 'namespaces', 'ls', '-q')).stdout, /^a$/m);
  });

  test('a namespace that holds data is listed though it was never created', async () => {
    for (const sock of socks()) {
      assert.equal((await ctr(sock, '-n', 'implicit-lease', 'leases', 'create', '--id', 'l')).code, 0);
      const data = Buffer.from('implicit');
      const dg = 'sha256:' + createHash('sha256').update(data).digest('hex');
      assert.equal(await writeBlob(sock, metadata('implicit-blob'), 'r', data, dg), 'ok');
      const ls = (await ctr(sock, 'namespaces', 'ls', '-q')).stdout.split('\n');
      assert.ok(ls.includes('implicit-lease') && ls.includes('implicit-blob'), `${sock}: ${ls}`);
      // holding a blob it cannot go; holding only a lease it can, and the lease goes with it
      assert.match((await ctr(sock, 'namespaces', 'rm', 'implicit-blob')).stderr, /must be empty, but it still has blobs/);
      assert.equal((await ctr(sock, '-n', 'implicit-blob', 'content', 'rm', dg)).code, 0);
      assert.equal((await ctr(sock, 'namespaces', 'rm', 'implicit-blob')).code, 0);
      assert.equal((await ctr(sock, 'namespaces', 'rm', 'implicit-lease')).code, 0);
      assert.equal((await ctr(sock, '-n', 'implicit-lease', 'leases', 'ls', '-q')).stdout, '', sock);
    }
  });

  test('lease resources: added, listed, deleted for every kind; a deleted lease comes back empty', async () => {
    const ns = 'lease-res';
    const md = metadata(ns);
    const dg = (s: string) => 'sha256:' + createHash('sha256').update(s).digest('hex');
    const list = async (sock: string, id: string) =>
      ((await unary(sock, L('ListResources'), { id }, md)).resources as { id: string; type: string }[]).map((r) => `${r.type} ${r.id}`).sort();
    for (const sock of socks()) {
      await unary(sock, L('Create'), { id: 'a' }, md);
      await unary(sock, L('Create'), { id: 'a/b' }, md);
      const kinds = [
        { type: 'content', id: dg('one') },
        { type: 'ingests', id: 'some/ref' },
        { type: 'snapshots/overlayfs', id: 'snap-1' },
      ];
      for (const r of kinds) await unary(sock, L('AddResource'), { id: 'a/b', resource: r }, md);
      // content written under the lease is the lease's too, whichever service wrote it
      const data = Buffer.from('written under a lease');
      assert.equal(await writeBlob(sock, metadata(ns, 'a/b'), 'w', data, dg(data.toString())), 'ok');
      assert.deepEqual(await list(sock, 'a'), [], `${sock}: lease "a" is not a prefix of "a/b"`);
      assert.deepEqual(await list(sock, 'a/b'), [...kinds.map((r) => `${r.type} ${r.id}`), `content ${dg(data.toString())}`].sort(), sock);
      await unary(sock, L('DeleteResource'), { id: 'a/b', resource: { type: 'content', id: dg(data.toString()) } }, md);
      for (const r of kinds) await unary(sock, L('DeleteResource'), { id: 'a/b', resource: r }, md);
      assert.deepEqual(await list(sock, 'a/b'), [], sock);
      await unary(sock, L('AddResource'), { id: 'a/b', resource: kinds[0] }, md);
      await unary(sock, L('Delete'), { id: 'a' }, md);
      assert.equal((await list(sock, 'a/b')).length, 1, `${sock}: deleting "a" left "a/b" alone`);
      await unary(sock, L('Delete'), { id: 'a/b' }, md);
      await unary(sock, L('Create'), { id: 'a/b' }, md);
      assert.deepEqual(await list(sock, 'a/b'), [], `${sock}: a re-created lease starts empty`);
      await unary(sock, L('Delete'), { id: 'a/b' }, md);
      await ctr(sock, '-n', ns, 'content', 'rm', dg(data.toString()));
    }
  });

  test('concurrent creates of one lease, one image, one namespace: exactly one wins', async () => {
    const target = { media_type: 'application/vnd.oci.image.manifest.v1+json', digest: 'sha256:' + 'c'.repeat(64), size: 10 };
    for (const sock of socks()) {
      const md = metadata('racing');
      const tries = (f: () => Promise<unknown>) => Promise.all(Array.from({ length: 10 }, () => outcome(f())));
      for (const results of [
        await tries(() => unary(sock, L('Create'), { id: 'same' }, md)),
        await tries(() => unary(sock, '/containerd.services.images.v1.Images/Create', { image: { name: 'race:1', target } }, md)),
        await tries(() => unary(sock, '/containerd.services.namespaces.v1.Namespaces/Create', { namespace: { name: 'race-ns' } }, md)),
      ]) {
        assert.equal(results.filter((r) => r === 'ok').length, 1, `${sock}: ${results}`);
        for (const r of results) if (r !== 'ok') assert.match(r, /^6 .*already exists$/);
      }
      await ctr(sock, '-n', 'racing', 'images', 'rm', 'race:1');
      await ctr(sock, 'namespaces', 'rm', 'race-ns');
    }
  });

  /** The events of one topic in the history for the object named `name`, through the socket's Replay. */
  const history = async (topic: string, name: string) => {
    const e = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', '1', '--json', `topic=="${topic}"`]);
    return e.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: { name: string } }).filter((x) => x.event.name === name);
  };

  test('JetStream unable to store during a create: the call succeeds, the event follows once it can, exactly once', async () => {
    // as the events service (the one user allowed to manage the stream), point the stream away
    // from the event subjects: every publish is then refused, as with JetStream down
    const nc = await natsWith(stack.natsUrl, stack.credentials('events'));
    const jsm = await jetstreamManager(nc);
    const cfg = (await jsm.streams.info('BERTH_EVENTS')).config;
    try {
      await jsm.streams.update('BERTH_EVENTS', { ...cfg, subjects: ['berth.nowhere.>'] });
      const r = await ctr(stack.sock, 'namespaces', 'create', 'while-js-down');
      assert.equal(r.code, 0, r.stderr);
      assert.ok((await ctr(stack.sock, 'namespaces', 'ls', '-q')).stdout.split('\n').includes('while-js-down'));
      await new Promise((res) => setTimeout(res, 1000)); // the outbox tries, and keeps the event
    } finally {
      await jsm.streams.update('BERTH_EVENTS', { ...cfg, subjects: ['berth.events.>'] });
      await nc.close();
    }
    await until(async () => (await history('/namespaces/create', 'while-js-down')).length > 0, 15_000, 'the event once JetStream stores again');
    await new Promise((res) => setTimeout(res, 500));
    assert.equal((await history('/namespaces/create', 'while-js-down')).length, 1);
  });

  test('kill -9 between commit and publish: the record stands, its event is delivered exactly once', async () => {
    const pid = stack.pid('namespaces');
    writeFileSync(faults, 'outbox-after-commit');
    // the service dies after the commit, before the reply: the caller sees it go away
    const r = await ctr(stack.sock, 'namespaces', 'create', 'crashed-once');
    assert.notEqual(r.code, 0, r.stdout);
    assert.equal(existsSync(faults), false, 'the fault point was reached');
    await until(async () => { try { return stack.pid('namespaces') !== pid && (await ctr(stack.sock, 'namespaces', 'ls', '-q')).code === 0; } catch { return false; } }, 15_000, 'namespaces restarted');
    assert.ok((await ctr(stack.sock, 'namespaces', 'ls', '-q')).stdout.split('\n').includes('crashed-once'));
    // a retry says it exists: the create happened once
    assert.match((await ctr(stack.sock, 'namespaces', 'create', 'crashed-once')).stderr, /already exists/);
    const events = () => history('/namespaces/create', 'crashed-once');
    await until(async () => (await events()).length > 0, 10_000, 'the event published after the restart');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await events()).length, 1);
  });
});
