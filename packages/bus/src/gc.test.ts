// The collection barrier over a real store, without NATS: writes wait while an epoch is held and
// in-flight ones finish before the enter answers; the sweep passes the gate; a lapsed or
// taken-over epoch cannot sweep; a barrier survives a restart of its service.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '@berth/store';
import { CollectionBarrier, emitsDelete } from './gc.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
async function store(dir = mkdtempSync(join(tmpdir(), 'berth-gc-'))): Promise<[Store, string]> {
  dirs.push(dir);
  return [await openStore(dir), dir];
}
const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));

test('a held epoch stops writes until release; writes in flight finish before the enter answers', async () => {
  const [db] = await store();
  const seen: boolean[] = [];
  const b = await CollectionBarrier.open(db, { mutated: (dirty) => seen.push(dirty) });
  const g = b.gate();
  let releaseSlow!: () => void;
  const slow = g.transact(['a'], async (tx) => {
    await new Promise<void>((r) => (releaseSlow = r));
    tx.put('a', 1);
  });
  await tick();
  let entered = false;
  const enter = b.enter('e1', 5000).then(() => (entered = true));
  await tick();
  assert.equal(entered, false, 'the enter waits for the write in flight');
  releaseSlow();
  await slow;
  await enter;
  assert.equal(await db.get('a'), 1);
  let wrote = false;
  const blocked = g.put('b', 2).then(() => (wrote = true));
  await tick(50);
  assert.equal(wrote, false, 'a write waits while the epoch is held');
  assert.equal(await db.get('b'), undefined);
  // the sweep's own writes pass
  await b.sweep('e1', Date.now() + 5000, async () => g.put('swept', 1));
  assert.equal(await db.get('swept'), 1);
  b.release('e1');
  await blocked;
  assert.equal(await db.get('b'), 2);
  assert.deepEqual(seen, [false, false], 'two writes reported (the sweep\'s is not one)');
  await db.close();
});

test('an epoch lapses by itself; its sweep is then refused; a newer epoch takes over an older one', async () => {
  const [db] = await store();
  const b = await CollectionBarrier.open(db);
  const g = b.gate();
  await b.enter('old', 100);
  const w = g.put('k', 1);
  await w; // lapsed after 100 ms
  await assert.rejects(b.sweep('old', Date.now() + 5000, async () => undefined), /barrier lapsed/);
  await b.enter('e1', 5000);
  await b.enter('e2', 5000);
  await assert.rejects(b.sweep('e1', Date.now() + 5000, async () => undefined), /barrier lapsed/);
  await assert.rejects(b.sweep('e2', Date.now() - 1, async () => undefined), /past its deadline/);
  let live = true;
  await b.sweep('e2', Date.now() + 60, async (isLive) => {
    await tick(100);
    live = isLive();
  });
  assert.equal(live, false, 'a sweep sees its deadline pass');
  b.release('e1'); // not the one held: nothing
  assert.equal(b.epoch, 'e2');
  b.release('e2');
  assert.equal(b.epoch, undefined);
  await db.close();
});

test('a lapse during a sweep waits for the sweep to end', async () => {
  const [db] = await store();
  const b = await CollectionBarrier.open(db);
  const g = b.gate();
  await b.enter('e', 80);
  let wrote = false;
  const sweep = b.sweep('e', Date.now() + 80, async () => {
    const w = g.put('x', 1).then(() => (wrote = true));
    void w;
    await tick(150); // past the ttl
    return wrote;
  });
  assert.equal(await sweep, true, 'the sweep\'s write passed');
  let other = false;
  await g.put('y', 1).then(() => (other = true));
  assert.equal(other, true, 'the gate opened after the sweep');
  await db.close();
});

test('a barrier persists: reopened (a restarted service) it is still held until its end or release', async () => {
  const [db, dir] = await store();
  const b = await CollectionBarrier.open(db);
  await b.enter('e', 5000);
  b.stop();
  await db.close();
  const db2 = await openStore(dir);
  const b2 = await CollectionBarrier.open(db2);
  assert.equal(b2.epoch, 'e');
  let wrote = false;
  const w = b2.gate().put('k', 1).then(() => (wrote = true));
  await tick(50);
  assert.equal(wrote, false);
  b2.release('e');
  await w;
  await tick();
  const db2b = b2; // released: a third opening finds no barrier
  db2b.stop();
  await db2.close();
  const db3 = await openStore(dir);
  assert.equal((await CollectionBarrier.open(db3)).epoch, undefined);
  await db3.close();
});

test('enter fails (and reopens) when a write in flight does not finish in half the ttl', async () => {
  const [db] = await store();
  const b = await CollectionBarrier.open(db);
  const g = b.gate();
  let finish!: () => void;
  const stuck = g.transact(['s'], () => new Promise<void>((r) => (finish = r)));
  await tick();
  await assert.rejects(b.enter('e', 100), /did not finish/);
  assert.equal(b.epoch, undefined);
  await g.put('after', 1); // not blocked
  finish();
  await stuck;
  await db.close();
});

test('dirty writes are those that emit a delete event', () => {
  const outbox = (s: string) => ({ type: 'put' as const, key: '~outbox/0001', value: { s, d: '' } });
  assert.equal(emitsDelete([outbox('berth.events.default.images.delete')]), true);
  assert.equal(emitsDelete([outbox('berth.events.k8s%2Eio.snapshot.remove')]), true);
  assert.equal(emitsDelete([outbox('berth.events.default.snapshot.commit'), { type: 'del', key: 'snap/x' }]), false);
  assert.equal(emitsDelete([{ type: 'put', key: 'image/a', value: { s: 'x.images.delete' } }]), false);
});
