// The event outbox against a real nats-server with JetStream: events follow their records
// exactly once, through a JetStream outage and a restart between publish and cleanup.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstreamManager } from '@nats-io/jetstream';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { openStore, type Store } from '@berth/store';
import { decodeEnvelope, ensureEventStream, eventStream } from './events.js';
import { Outbox } from './outbox.js';

const limits = { maxAgeNs: 0, maxBytes: 1 << 26 };

async function storedEvents(nc: NatsConnection): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const { state } = await jsm.streams.info(eventStream);
  const out: string[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(eventStream, { seq }).catch(() => undefined);
    if (m) out.push(`${decodeEnvelope(m.data).topic} ${JSON.stringify(decodeEnvelope(m.data).namespace)}`);
  }
  return out;
}

async function until(fn: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await fn())) {
    if (Date.now() - t0 > ms) throw new Error('not in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('event outbox', () => {
  let dir: string;
  let natsd: NatsServer;
  let nc: NatsConnection;
  let store: Store;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-outbox-'));
    natsd = await startNatsServer({ dir: join(dir, 'nats') });
    nc = await connect({ servers: natsd.url });
    store = await openStore(join(dir, 'db'));
  });

  after(async () => {
    await store?.close();
    await nc?.close();
    await natsd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a record and its event: committed together, published once, in order', async () => {
    await ensureEventStream(nc, limits);
    const outbox = await new Outbox(store, nc, { service: 'test', node: 'n1' }).start();
    for (let i = 0; i < 20; i++) {
      await store.transact([`rec/${i}`], async (tx) => {
        tx.put(`rec/${i}`, i);
        outbox.emit(tx, `ns${i}`, '/namespaces/create', { name: `ns${i}` });
      });
    }
    // a transaction that fails writes neither record nor event
    await assert.rejects(
      store.transact(['rec/x'], async (tx) => {
        tx.put('rec/x', 1);
        outbox.emit(tx, 'nsx', '/namespaces/create', { name: 'nsx' });
        throw new Error('changed my mind');
      }),
    );
    await outbox.flushed();
    assert.equal(await store.get('rec/x'), undefined);
    assert.deepEqual(await storedEvents(nc), Array.from({ length: 20 }, (_, i) => `/namespaces/create "ns${i}"`));
    outbox.stop();
    await (await jetstreamManager(nc)).streams.delete(eventStream);
  });

  test('many batches in flight at once: every event stored once, in the order of its commit', async () => {
    await ensureEventStream(nc, limits);
    // small batches, so most of these go out while earlier batches still wait for their acks
    const outbox = await new Outbox(store, nc, { service: 'test', node: 'n1', batch: 16 }).start();
    await Promise.all(
      Array.from({ length: 50 }, async (_, t) => {
        await new Promise((r) => setTimeout(r, t)); // commits keep coming while batches are in flight
        await store.transact([`many/${t}`], async (tx) => {
          for (let i = 0; i < 20; i++) outbox.emit(tx, `m${t * 20 + i}`, '/namespaces/create', { name: `m${t * 20 + i}` });
        });
      }),
    );
    await outbox.flushed();
    assert.deepEqual(await storedEvents(nc), Array.from({ length: 1000 }, (_, i) => `/namespaces/create "m${i}"`));
    outbox.stop();
    await (await jetstreamManager(nc)).streams.delete(eventStream);
  });

  test('JetStream unable to store: the call succeeds, the event waits and is published once when it can', async () => {
    // no stream: every publish is refused (no responders), as when JetStream is down
    const outbox = await new Outbox(store, nc, { service: 'test', node: 'n1' }).start();
    await store.transact(['rec/down'], async (tx) => {
      tx.put('rec/down', 1);
      outbox.emit(tx, 'down', '/namespaces/create', { name: 'down' });
    });
    assert.equal(await store.get('rec/down'), 1);
    await new Promise((r) => setTimeout(r, 400)); // a few failed attempts
    await ensureEventStream(nc, limits);
    await until(async () => (await storedEvents(nc)).length > 0);
    await outbox.flushed();
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await storedEvents(nc), ['/namespaces/create "down"']);
    outbox.stop();
  });

  test('a crash after JetStream stored the event but before the outbox entry was removed: not doubled', async () => {
    const first = await new Outbox(store, nc, { service: 'test', node: 'n1' }).start();
    await store.transact(['rec/crash'], async (tx) => {
      tx.put('rec/crash', 1);
      first.emit(tx, 'crash', '/namespaces/create', { name: 'crash' });
    });
    // capture the entry as it was before the publisher removed it
    let entry: [string, unknown] | undefined;
    for await (const e of store.entries('~outbox/')) entry = e;
    await first.flushed();
    first.stop();
    const before = (await storedEvents(nc)).length;
    // the restart finds the entry again (the removal never happened)
    await store.put(entry![0], entry![1]);
    const second = await new Outbox(store, nc, { service: 'test', node: 'n1' }).start();
    await second.flushed();
    second.stop();
    const after = await storedEvents(nc);
    assert.equal(after.length, before);
    assert.equal(after.filter((e) => e === '/namespaces/create "crash"').length, 1);
  });
});
