import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { fromAny, toAny } from '@berth/api';
import { decodeEnvelope, encodeEnvelope, ensureEventStream, envelope, publishEnvelope, subjectFor } from '@berth/bus';
import { Code, type BerthError } from '@berth/errdefs';
import { envelopeJson } from '@berth/bus';
import { Events } from './local.js';
import { validateTopic } from './validate.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('topics and subjects', () => {
  test('topic validation like containerd', () => {
    validateTopic('/tasks/exit');
    assert.throws(() => validateTopic(''), /must not be empty: invalid argument/);
    assert.throws(() => validateTopic('tasks'), /must start with '\/'/);
    assert.throws(() => validateTopic('/'), /must have at least one component/);
    assert.throws(() => validateTopic('/tasks/bad name'), (e: BerthError) => e.code === Code.InvalidArgument && /failed validation on component "bad name"/.test(e.message));
  });

  test('simple filters narrow the subject, others listen to everything', () => {
    assert.equal(subjectFor([]), 'berth.events.>');
    assert.equal(subjectFor(['topic=="/tasks/exit"']), 'berth.events.*.tasks.exit');
    assert.equal(subjectFor(['namespace==k8s.io,topic=="/tasks/exit"']), 'berth.events.k8s%2Eio.tasks.exit');
    assert.equal(subjectFor(['namespace==default']), 'berth.events.default.>');
    assert.equal(subjectFor(['topic~="/containers/"']), 'berth.events.>');
    assert.equal(subjectFor(['namespace==a', 'namespace==b']), 'berth.events.>');
  });
});

describe('events over a real nats-server with JetStream', () => {
  let dir: string;
  let natsd: NatsServer;
  let nc: NatsConnection;
  let events: Events;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-events-'));
    natsd = await startNatsServer({ dir });
    nc = await connect({ servers: natsd.url });
    await ensureEventStream(nc, { maxAgeNs: 3600e9, maxBytes: 64 << 20 });
    events = new Events({ nc, node: 'n1', maxPending: 50 });
  });
  after(async () => {
    await nc?.close();
    await natsd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('publish reaches a filtered subscriber and a plain NATS subscriber, in order', async () => {
    const ac = new AbortController();
    const got: string[] = [];
    const plain: string[] = [];
    const sub = nc.subscribe('berth.events.ns1.>', { callback: (_e, m) => void plain.push(decodeEnvelope(m.data).topic) });
    const ids: string[] = [];
    const done = events.subscribe(['topic~="/containers/"'], ac.signal, async (b) => {
      const e = decodeEnvelope(b);
      got.push(e.topic);
      ids.push(fromAny<{ id: string }>(e.event).id);
    });
    await sleep(50);
    // published concurrently, as several services would: each reaches the subscriber in the order it was stored
    await Promise.all(Array.from({ length: 20 }, (_, i) => events.publish('ns1', i % 2 ? '/containers/create' : '/tasks/exit', toAny('containerd.events.ContainerCreate', { id: `c${i}` }))));
    for (let i = 20; i < 40; i++) await events.publish('ns1', '/containers/update', toAny('containerd.events.ContainerCreate', { id: `c${i}` }));
    await sleep(200);
    ac.abort();
    await done;
    sub.unsubscribe();
    assert.equal(got.length, 30);
    assert.ok(got.every((t) => t.startsWith('/containers/')));
    // the sequential ones arrive exactly in publishing order
    assert.deepEqual(ids.slice(10), Array.from({ length: 20 }, (_, i) => `c${i + 20}`));
    assert.equal(plain.length, 40);
  });

  test('event field filters: event.id', async () => {
    const ac = new AbortController();
    const ids: string[] = [];
    const done = events.subscribe(['event.id==c7'], ac.signal, async (b) => void ids.push(fromAny<{ id: string }>(decodeEnvelope(b).event).id));
    await sleep(50);
    for (let i = 0; i < 10; i++) await events.publish('ns1', '/containers/delete', toAny('containerd.events.ContainerDelete', { id: `c${i}` }));
    await sleep(200);
    ac.abort();
    await done;
    assert.deepEqual(ids, ['c7']);
  });

  test('bad input: no namespace, bad topic, bad filter', async () => {
    const ev = toAny('containerd.events.ContainerDelete', { id: 'x' });
    await assert.rejects(events.publish(undefined, '/a', ev), (e: BerthError) => e.code === Code.FailedPrecondition);
    await assert.rejects(events.publish('ns1', 'nope', ev), (e: BerthError) => e.code === Code.InvalidArgument && /envelope topic "nope"/.test(e.message));
    await assert.rejects(events.subscribe(['topic=='], new AbortController().signal, async () => {}), (e: BerthError) => e.code === Code.InvalidArgument);
    await assert.rejects(events.forward({ namespace: 'ns1', topic: '/a', event: ev, timestamp: { seconds: 0, nanos: 0 } }), /timestamp must be set/);
  });

  test('a stuck subscriber is cut off, publishers go on', async () => {
    const ac = new AbortController();
    const outcome = events.subscribe([], ac.signal, () => new Promise(() => {})).then(() => undefined, (e: BerthError) => e); // never takes a message
    // a healthy subscriber beside it gets everything, and publishers never wait
    const healthy = new AbortController();
    let seen = 0;
    const other = events.subscribe(['namespace==ns2'], healthy.signal, async () => void seen++);
    await sleep(50);
    const t0 = Date.now();
    for (let i = 0; i < 80; i++) await events.publish('ns2', '/x/y', toAny('containerd.events.ContainerDelete', { id: `s${i}` }));
    assert.ok(Date.now() - t0 < 2000, `80 publishes took ${Date.now() - t0} ms`);
    const e = await outcome;
    await sleep(100);
    healthy.abort();
    await other;
    assert.equal(seen, 80);
    assert.equal(e?.code, Code.ResourceExhausted);
    assert.match(e!.message, /too slow/);
  });

  test('a stuck subscriber is cut off by the bytes it holds, well before the event count', async () => {
    const small = new Events({ nc, node: 'n1', maxPending: 10_000, maxPendingBytes: 64 << 10 });
    const ac = new AbortController();
    const outcome = small.subscribe(['namespace==big'], ac.signal, () => new Promise(() => {})).then(() => undefined, (e: BerthError) => e);
    // a reader that keeps up is never cut off, whatever the events weigh
    const healthy = new AbortController();
    let seen = 0;
    const other = small.subscribe(['namespace==big'], healthy.signal, async () => void seen++);
    await sleep(50);
    for (let i = 0; i < 20; i++) await small.publish('big', '/x/y', toAny('containerd.events.ContainerDelete', { id: `${i}-${'x'.repeat(8 << 10)}` }));
    const e = await outcome;
    await sleep(100);
    healthy.abort();
    await other;
    assert.equal(seen, 20);
    assert.equal(e?.code, Code.ResourceExhausted);
    assert.match(e!.message, /too slow: more than 65536 bytes of events pending/);
  });

  test('replay: a subscriber that resumes after 1,000 missed events gets exactly them, in order', async () => {
    // the subscriber reads some events, goes away, and remembers its last sequence number
    const before = await publishMany(5, 'before');
    let last = 0;
    await events.replay({ filters: ['namespace==replay'], since_seq: before[0]!, since_time: null, follow: false }, new AbortController().signal, async (e) => void (last = e.seq));
    assert.equal(last, before.at(-1));
    const missed = await publishMany(1000, 'missed');
    const got: { seq: number; id: string }[] = [];
    const ac = new AbortController();
    const following = events.replay({ filters: ['namespace==replay'], since_seq: last + 1, since_time: null, follow: true }, ac.signal, async (e) => {
      got.push({ seq: e.seq, id: fromAny<{ id: string }>(e.envelope.event).id });
      if (got.length === 1001) ac.abort();
    });
    await sleep(300);
    await publishMany(1, 'live'); // followed after the history
    await following;
    assert.equal(got.length, 1001);
    assert.deepEqual(got.slice(0, 1000).map((g) => g.seq), missed);
    assert.deepEqual(got.slice(0, 1000).map((g) => g.id), missed.map((_, i) => `missed-${i}`));
    assert.equal(got[1000]!.id, 'live-0');
    assert.equal(new Set(got.map((g) => g.seq)).size, 1001);
  });

  test('garbage on an event subject is skipped by subscribers and replay', async () => {
    const ac = new AbortController();
    const got: string[] = [];
    const done = events.subscribe(['namespace==junk'], ac.signal, async (b) => void got.push(decodeEnvelope(b).topic));
    await sleep(50);
    const { jetstream } = await import('@nats-io/jetstream');
    const first = (await jetstream(nc).publish('berth.events.junk.x.y', Buffer.from([0xff, 0xff, 0xff]))).seq;
    await publishEnvelope(nc, envelope('junk', '/x/y', 'containerd.events.ContainerDelete', { id: 'ok' }), 'n1');
    await sleep(100);
    ac.abort();
    await done;
    assert.deepEqual(got, ['/x/y']);
    const replayed: number[] = [];
    await events.replay({ filters: ['namespace==junk'], since_seq: first, since_time: null, follow: false }, new AbortController().signal, async (e) => void replayed.push(e.seq));
    assert.deepEqual(replayed, [first + 1]);
  });

  test('replay by time', async () => {
    await sleep(20);
    const t = Date.now();
    await sleep(20);
    const seqs = await publishMany(3, 'timed');
    const got: number[] = [];
    await events.replay({ filters: ['namespace==replay'], since_seq: 0, since_time: { seconds: Math.floor(t / 1000), nanos: (t % 1000) * 1e6 }, follow: false }, new AbortController().signal, async (e) => void got.push(e.seq));
    assert.deepEqual(got, seqs);
  });

  test('replay from a time outside the timestamp range is InvalidArgument', async () => {
    for (const since_time of [{ seconds: 2 ** 53, nanos: 0 }, { seconds: 253402300800, nanos: 0 }, { seconds: 1, nanos: -1 }, { seconds: 1, nanos: 1e9 }]) {
      await assert.rejects(
        events.replay({ filters: [], since_seq: 0, since_time, follow: false }, new AbortController().signal, async () => {}),
        (e: BerthError) => e.code === Code.InvalidArgument && /since_time: timestamp out of range/.test(e.message),
        JSON.stringify(since_time),
      );
    }
  });

  test('JSON form: canonical mapping with the event expanded', () => {
    const e = envelope('ns1', '/tasks/exit', 'containerd.events.TaskExit', { container_id: 'c1', pid: 42, exit_status: 7, exited_at: { seconds: 1700000000, nanos: 5000 } });
    e.timestamp = { seconds: 1700000000, nanos: 120000000 };
    const j = JSON.parse(envelopeJson(encodeEnvelope(e)));
    assert.equal(j.timestamp, '2023-11-14T22:13:20.12Z');
    assert.equal(j.namespace, 'ns1');
    assert.equal(j.event['@type'], 'containerd.events.TaskExit');
    assert.equal(j.event.container_id, 'c1');
    assert.equal(j.event.exit_status, 7);
    assert.equal(j.event.exited_at, '2023-11-14T22:13:20.000005Z');
  });

  async function publishMany(n: number, prefix: string): Promise<number[]> {
    const seqs = [];
    for (let i = 0; i < n; i++) seqs.push(await publishEnvelope(nc, envelope('replay', '/containers/update', 'containerd.events.ContainerUpdate', { id: `${prefix}-${i}` }), 'n1'));
    return seqs;
  }
});
