// The service side of the read cache's protocol: notices around every counted write, and a
// read's reply marked cacheable only when no write overlapped it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/nats-core';
import { MsgHdrsImpl } from '@nats-io/nats-core/internal';
import { levelStore } from '@berth/store';
import { ChangeNotices, changesSubject, parseNotice, parseState, recordHeader, stateHeader } from './changes.js';
import { outboxPrefix } from './outbox.js';

/** A connection that records what is published and never changes status. */
function fakeNc(): { nc: NatsConnection; sent: string[] } {
  const sent: string[] = [];
  const nc = {
    publish: (subject: string, data: string) => {
      assert.equal(subject, changesSubject('n1', 'content'));
      sent.push(data);
    },
    status: () => ({ async *[Symbol.asyncIterator]() {} }),
  } as unknown as NatsConnection;
  return { nc, sent };
}

/** A database whose writes wait until `release` is called. */
function slowDb() {
  const data = new Map<string, string>();
  const waiting: (() => void)[] = [];
  const hold = () => new Promise<void>((r) => waiting.push(r));
  return {
    waiting,
    db: {
      open: async () => undefined,
      close: async () => undefined,
      get: async (k: string) => data.get(k),
      put: async (k: string, v: string) => {
        await hold();
        data.set(k, v);
      },
      del: async (k: string) => {
        await hold();
        data.delete(k);
      },
      batch: async (ops: { type: 'put' | 'del'; key: string; value?: string }[]) => {
        await hold();
        for (const o of ops) o.type === 'put' ? data.set(o.key, o.value!) : data.delete(o.key);
      },
      iterator: () => {
        throw new Error('not used');
      },
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));
const state = (c: ChangeNotices, start: number) => {
  // what the reply carries: its encoded headers, read back as a receiver reads them
  const bytes = (c.stamp(start) as unknown as { encode(): Uint8Array }).encode();
  const st = parseState(MsgHdrsImpl.decode(bytes).get(stateHeader));
  assert.deepEqual(st, parseState(c.state(start)));
  return st!;
};

test('a write is announced before it reaches the database and after it ends; a read overlapping it is not cacheable', async () => {
  const { nc, sent } = fakeNc();
  const changes = new ChangeNotices(nc, 'n1', 'content');
  const { db, waiting } = slowDb();
  const store = await levelStore(db, { watch: changes });
  changes.reset();
  assert.deepEqual(sent, [`${changes.boot}.0`]);

  const idle = changes.readStart();
  assert.equal(idle, 0);
  assert.deepEqual(state(changes, idle), { boot: changes.boot, seq: 0, cacheable: true });

  const w = store.put('k', { v: 1 });
  await tick();
  assert.deepEqual(sent, [`${changes.boot}.0`, `${changes.boot}.1\0k`], 'the notice goes before the write is done, naming its key');
  assert.equal(waiting.length, 1, 'the write is under way');
  assert.equal(changes.readStart(), -1, 'a read that starts during a write is not kept');
  assert.equal(state(changes, idle).cacheable, false, 'nor one that started before it');
  waiting.shift()!();
  await w;
  assert.deepEqual(sent.slice(2), [`${changes.boot}.2\0k`]);
  assert.equal(state(changes, idle).cacheable, false, 'a read the write overlapped is not kept');
  const after = changes.readStart();
  assert.equal(after, 2);
  assert.equal(state(changes, after).cacheable, true);
});

test('a failed write and a transaction are announced too; a transaction ends after its afterCommit', async () => {
  const { nc, sent } = fakeNc();
  const changes = new ChangeNotices(nc, 'n1', 'content');
  const { db, waiting } = slowDb();
  const store = await levelStore(db, { watch: changes });
  const seen: string[] = [];
  const t = store.transact(['a'], async (tx) => {
    tx.put('a', 1);
    tx.afterCommit(() => seen.push(`after, ${sent.length} notices`));
  });
  await tick();
  assert.equal(sent.length, 1);
  waiting.shift()!();
  await t;
  assert.deepEqual(seen, ['after, 1 notices'], 'the end notice follows what afterCommit updates');
  assert.equal(sent.length, 2);

  db.batch = async () => {
    throw new Error('disk full');
  };
  await assert.rejects(store.batch([{ type: 'put', key: 'b', value: 1 }]), /disk full/);
  assert.equal(sent.length, 4, 'a failed write ends too');
  assert.equal(changes.readStart(), 4, 'nothing left in flight');
  // a read-only transaction writes nothing, so it announces nothing
  await store.transact(['a'], async (tx) => void (await tx.get('a')));
  assert.equal(sent.length, 4);
});

test("the outbox's and the collector's bookkeeping is not announced", async () => {
  const { nc, sent } = fakeNc();
  const changes = new ChangeNotices(nc, 'n1', 'content');
  const { db, waiting } = slowDb();
  const store = await levelStore(db, { watch: changes });
  const w = store.batch([
    { type: 'del', key: `${outboxPrefix}0001` },
    { type: 'put', key: '~gc/barrier', value: {} },
  ]);
  await tick();
  waiting.shift()!();
  await w;
  assert.deepEqual(sent, []);
  const m = store.batch([
    { type: 'del', key: `${outboxPrefix}0002` },
    { type: 'put', key: 'blob/x', value: {} },
  ]);
  await tick();
  waiting.shift()!();
  await m;
  assert.equal(sent.length, 2, 'a batch with a record in it is');
});

test("a seed's reply is kept only when its own write was the only one while it ran", async () => {
  const { nc } = fakeNc();
  const changes = new ChangeNotices(nc, 'n1', 'content');
  const { db, waiting } = slowDb();
  const store = await levelStore(db, { watch: changes });
  const stamped = (start: number) => {
    const bytes = (changes.stampWrite(start) as unknown as { encode(): Uint8Array }).encode();
    return parseState(MsgHdrsImpl.decode(bytes).get(stateHeader))!;
  };
  const write = async (k: string) => {
    const w = store.put(k, 1);
    await tick();
    waiting.shift()!();
    await w;
  };
  // alone: begin and end of its own write
  let start = changes.readStart();
  await write('a');
  assert.deepEqual(stamped(start), { boot: changes.boot, seq: start + 2, cacheable: true });
  // another write after its own, before its reply: the record may have changed again
  start = changes.readStart();
  await write('a');
  await write('a');
  assert.equal(stamped(start).cacheable, false, 'two writes while it ran');
  // one under way when it started: not a known state to start from
  const held = store.put('b', 1);
  await tick();
  assert.equal(changes.readStart(), -1);
  assert.equal(stamped(-1).cacheable, false);
  waiting.shift()!();
  await held;
  // its own write done, another one still under way at the reply
  start = changes.readStart();
  await write('a');
  const other = store.put('c', 1);
  await tick();
  assert.equal(stamped(start).cacheable, false, 'a write under way at the reply');
  waiting.shift()!();
  await other;
});

test('notices name the keys: a begin its write\'s, an end those of every write begun since none was under way; too many keys name none', async () => {
  const { nc, sent } = fakeNc();
  const changes = new ChangeNotices(nc, 'n1', 'content');
  const { db, waiting } = slowDb();
  const store = await levelStore(db, { watch: changes });
  const keysOf = (i: number) => parseNotice(sent[i]!).keys;
  const a = store.batch([
    { type: 'put', key: 'snap/a', value: 1 },
    { type: 'del', key: `${outboxPrefix}0001` },
  ]);
  await tick();
  const b = store.put('snap/b', 1);
  await tick();
  assert.deepEqual([keysOf(0), keysOf(1)], [['snap/a'], ['snap/b']], 'bookkeeping keys are not named');
  waiting.shift()!();
  await a;
  assert.deepEqual(keysOf(2), ['snap/a', 'snap/b'], 'the end of either write may be either: both named');
  waiting.shift()!();
  await b;
  assert.deepEqual(keysOf(3), ['snap/a', 'snap/b']);
  // nothing under way any more: the next write's end names its own keys only
  const c = store.put('snap/c', 1);
  await tick();
  waiting.shift()!();
  await c;
  assert.deepEqual([keysOf(4), keysOf(5)], [['snap/c'], ['snap/c']]);
  // a write of many keys is about everything, and so are the ends while it is under way
  const many = Array.from({ length: 17 }, (_, i) => ({ type: 'put' as const, key: `snap/m${i}`, value: 1 }));
  const m = store.batch(many);
  await tick();
  const d = store.put('snap/d', 1);
  await tick();
  waiting.shift()!();
  await m;
  assert.deepEqual([keysOf(6), keysOf(7), keysOf(8)], [undefined, ['snap/d'], undefined]);
  waiting.shift()!();
  await d;
  assert.equal(keysOf(9), undefined);
  changes.touch();
  assert.equal(keysOf(10), undefined, 'a touch is about everything');
  assert.deepEqual(parseNotice(sent[10]!).state, { boot: changes.boot, seq: 11, cacheable: false });
});

test('a cacheable reply names the one record its answer came from; one that is not, none', () => {
  const { nc } = fakeNc();
  const changes = new ChangeNotices(nc, 'n1', 'content');
  const read = (h: unknown) => MsgHdrsImpl.decode((h as { encode(): Uint8Array }).encode());
  const start = changes.readStart();
  const kept = read(changes.stamp(start, 'snap/a'));
  assert.equal(kept.get(recordHeader), 'snap/a');
  assert.equal(parseState(kept.get(stateHeader))?.cacheable, true);
  changes.touch();
  const stale = read(changes.stamp(start, 'snap/a'));
  assert.equal(stale.get(recordHeader), '', 'not kept: nothing to name');
  assert.equal(read(changes.stamp(changes.readStart())).get(recordHeader), '', 'no record given');
});

test('states parse back; malformed ones are none', () => {
  assert.deepEqual(parseState('abc.12.c'), { boot: 'abc', seq: 12, cacheable: true });
  assert.deepEqual(parseState('abc.12'), { boot: 'abc', seq: 12, cacheable: false });
  for (const bad of [undefined, '', 'abc', 'abc.x', '.3', 'abc.-1']) assert.equal(parseState(bad), undefined, String(bad));
});
