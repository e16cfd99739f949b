// The read cache's rules, with a connection faked: notices and replies are fed in the order a
// real connection would deliver them. (test/src/readcache.test.ts runs it against a real stack.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Msg, NatsConnection } from '@nats-io/nats-core';
import { recordHeader, stateHeader, type OnCancel } from '@berth/bus';
import { ReadCache, type ReadCacheOptions } from './readcache.js';

type Cb = (err: Error | null, msg: Msg) => void;

function fakeNc() {
  const subs = new Map<string, Cb>();
  let pushStatus: ((s: { type: string }) => void) | undefined;
  const statuses: { type: string }[] = [];
  const nc = {
    flush: async () => undefined,
    subscribe: (subject: string, o: { callback: Cb }) => {
      subs.set(subject, o.callback);
      return { unsubscribe: () => subs.delete(subject) };
    },
    status: () => ({
      async *[Symbol.asyncIterator]() {
        for (;;) {
          if (statuses.length) yield statuses.shift()!;
          else await new Promise<void>((r) => (pushStatus = (s) => (statuses.push(s), r())));
        }
      },
    }),
  } as unknown as NatsConnection;
  return {
    nc,
    notice: (service: string, v: string) => subs.get("berth.changes.n1.*")!(null, { subject: `berth.changes.n1.${service}`, string: () => v } as Msg),
    status: (type: string) => pushStatus?.({ type }),
    refuse: () => subs.get('berth.changes.n1.*')!(new Error('Permissions Violation for Subscription'), undefined as unknown as Msg),
  };
}

const reply = (state?: string, record?: string): Msg =>
  ({ headers: state === undefined ? undefined : { get: (k: string) => (k === stateHeader ? state : k === recordHeader ? (record ?? '') : '') } }) as unknown as Msg;
const noCancel: OnCancel = () => () => undefined;
const tick = () => new Promise((r) => setImmediate(r));

/** A cache on `f`'s connection, once its notice subscription is confirmed. */
async function started(f: ReturnType<typeof fakeNc>, o: ReadCacheOptions): Promise<ReadCache> {
  const cache = new ReadCache(f.nc, 'n1', o);
  await tick();
  return cache;
}

/** A service whose next answers are given by the test: each call takes the next [state, answer]. */
function service(cache: ReadCache, name = 'content', path = '/x.Content/Info', before?: () => void) {
  const queue: [string | undefined, string, string?][] = [];
  let calls = 0;
  const route = cache.route(name, path, async (_body, _ctx, _c, onReply) => {
    calls++;
    const [state, answer, record] = queue.shift()!;
    onReply?.(reply(state, record));
    before?.(); // what arrives after the reply, before the caller gets it
    return new TextEncoder().encode(answer);
  });
  const call = async (body = 'req', ns = 'default') => new TextDecoder().decode(await route(Buffer.from(body), { namespace: ns }, noCancel));
  return { queue, call, calls: () => calls };
}

const opts: ReadCacheOptions = { maxEntries: 100, maxBytes: 1 << 20 };

test('a cacheable answer in the known state is kept and served; a notice drops it', async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const s = service(cache);
  f.notice('content', 'b1.0');
  s.queue.push(['b1.0.c', 'v1']);
  assert.equal(await s.call(), 'v1');
  assert.equal(await s.call(), 'v1');
  assert.equal(s.calls(), 1, 'the second read was answered by the gateway');
  assert.deepEqual([cache.stats.hits, cache.stats.misses], [1, 1]);
  f.notice('content', 'b1.1');
  s.queue.push(['b1.1', 'v2']);
  assert.equal(await s.call(), 'v2', 'after a notice the read goes to the service');
  s.queue.push(['b1.2.c', 'v3']);
  assert.equal(await s.call(), 'v3', 'a reply in a state with no notice yet is not kept...');
  assert.equal(s.calls(), 3);
  assert.equal(await s.call(), 'v3', '...unless it can only be newer than what is known (a missed notice)');
  assert.equal(s.calls(), 3);
  cache.close();
});

test('a notice that arrives between a reply and its caller keeps the reply from being stored', async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  let raced = false;
  const s = service(cache, 'content', '/x.Content/Info', () => {
    if (!raced) f.notice('content', 'b1.1');
    raced = true;
  });
  f.notice('content', 'b1.0');
  s.queue.push(['b1.0.c', 'old'], ['b1.2.c', 'new']);
  assert.equal(await s.call(), 'old');
  assert.equal(await s.call(), 'new', 'the old answer was not kept');
  assert.equal(cache.snapshot().hits, 0);
  cache.close();
});

test('a reply of another boot while one is known is not trusted: a late reply of a process that died', async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const s = service(cache);
  f.notice('content', 'b2.0');
  s.queue.push(['b1.57.c', 'from the dead'], ['b2.0.c', 'v']);
  assert.equal(await s.call(), 'from the dead');
  assert.equal(cache.snapshot().entries, 0, 'not kept');
  // with nothing known, the next reply is adopted (it can only be the current state) and kept
  assert.equal(await s.call(), 'v');
  assert.equal(await s.call(), 'v');
  assert.equal(s.calls(), 2, 'the third read was answered by the gateway');
  cache.close();
});

test("any reply of the service shows a missed notice: a write's reply in a later state drops the copies", async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const info = service(cache);
  const update = service(cache, 'content', '/x.Content/Update');
  f.notice('content', 'b1.0');
  info.queue.push(['b1.0.c', 'old']);
  await info.call();
  assert.equal(await info.call(), 'old');
  // the write's notices were lost; its reply says the state moved to 2
  update.queue.push(['b1.2', 'ok']);
  await update.call();
  info.queue.push(['b1.2.c', 'new']);
  assert.equal(await info.call(), 'new');
  cache.close();
});

test('namespaces and request bytes key the copies; errors and unstamped replies are not kept', async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const s = service(cache);
  f.notice('content', 'b1.0');
  s.queue.push(['b1.0.c', 'a in ns1'], ['b1.0.c', 'a in ns2'], ['b1.0.c', 'b in ns1']);
  assert.equal(await s.call('a', 'ns1'), 'a in ns1');
  assert.equal(await s.call('a', 'ns2'), 'a in ns2');
  assert.equal(await s.call('b', 'ns1'), 'b in ns1');
  assert.equal(await s.call('a', 'ns2'), 'a in ns2');
  assert.equal(await s.call('a', 'ns1'), 'a in ns1');
  assert.equal(s.calls(), 3);

  const failing = cache.route('content', '/x.Content/Other', async (_b, _c, _x, onReply) => {
    onReply?.(reply('b1.0.c'));
    throw new Error('boom');
  });
  await assert.rejects(failing(Buffer.from('x'), {}, noCancel));
  await assert.rejects(failing(Buffer.from('x'), {}, noCancel), 'an error is not kept');

  const plain = service(cache, 'tasks', '/x.Tasks/Get');
  plain.queue.push([undefined, 'a'], [undefined, 'b']);
  assert.equal(await plain.call(), 'a');
  assert.equal(await plain.call(), 'b', 'a service that does not stamp its replies is never answered here');
  cache.close();
});

test("the gateway's own disconnect forgets everything until a notice or reply", async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const s = service(cache);
  f.notice('content', 'b1.0');
  s.queue.push(['b1.0.c', 'v']);
  await s.call();
  assert.equal(cache.snapshot().entries, 1);
  f.status('disconnect');
  await tick();
  assert.equal(cache.snapshot().entries, 0);
  s.queue.push(['b1.0.c', 'v']);
  await s.call();
  assert.equal(s.calls(), 2);
  cache.close();
});

test('bounded: the oldest entries go past the entry and byte limits; one large answer is not kept', async () => {
  const f = fakeNc();
  const cache = await started(f, { maxEntries: 3, maxBytes: 800 });
  const s = service(cache);
  f.notice('content', 'b1.0');
  for (let i = 0; i < 5; i++) {
    s.queue.push(['b1.0.c', `v${i}`]);
    await s.call(`k${i}`);
  }
  assert.equal(cache.snapshot().entries, 3);
  s.queue.push(['b1.0.c', 'again']);
  assert.equal(await s.call('k0'), 'again', 'the oldest went');
  assert.equal(await s.call('k4'), 'v4', 'the newest stayed');
  s.queue.push(['b1.0.c', 'x'.repeat(200)]);
  await s.call('big');
  assert.ok(cache.snapshot().bytes <= 800);
  s.queue.push(['b1.0.c', 'x'.repeat(200)]);
  await s.call('big');
  assert.equal(s.calls(), 8, 'an answer above an eighth of the bytes is not kept');
  cache.close();
});

test('nothing is kept until the notice subscription is confirmed, nor ever after it was refused', async () => {
  const f = fakeNc();
  let confirm!: () => void;
  (f.nc as unknown as { flush: () => Promise<void> }).flush = () => new Promise<void>((r) => (confirm = r));
  const cache = new ReadCache(f.nc, 'n1', opts);
  const s = service(cache);
  f.notice('content', 'b1.0');
  s.queue.push(['b1.0.c', 'v'], ['b1.0.c', 'v']);
  await s.call();
  await s.call();
  assert.equal(s.calls(), 2, 'not kept before the subscription is confirmed');
  confirm();
  await tick();
  s.queue.push(['b1.0.c', 'v']);
  await s.call();
  await s.call();
  assert.equal(s.calls(), 3, 'kept once it is');
  f.refuse();
  assert.equal(cache.snapshot().entries, 0);
  s.queue.push(['b1.0.c', 'v'], ['b1.0.c', 'v']);
  await s.call();
  await s.call();
  assert.equal(s.calls(), 5, 'and never again once the subscription failed');
  cache.close();
});

test("a seed's write keeps its marked answer as its read's; a request that cannot be made keeps nothing and fails nothing", async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const get = service(cache, 'containers', '/x.Containers/Get');
  const writes: [string, string][] = [];
  const create = cache.route(
    'containers',
    '/x.Containers/Create',
    async (_b, _c, _x, onReply) => {
      const [state, answer] = writes.shift()!;
      onReply?.(reply(state));
      return new TextEncoder().encode(answer);
    },
    { read: '/x.Containers/Get', request: (w) => (w.toString() === 'bad' ? (() => { throw new Error('undecodable'); })() : Buffer.from(`get ${w}`)) },
  );
  f.notice('containers', 'b1.2');
  writes.push(['b1.2.c', 'c1']);
  assert.equal(new TextDecoder().decode(await create(Buffer.from('c1'), { namespace: 'default' }, noCancel)), 'c1');
  assert.equal(await get.call('get c1'), 'c1', 'the read right after the write is its answer');
  assert.equal(get.calls(), 0);
  assert.equal(cache.stats.seeded, 1);
  f.notice('containers', 'b1.4');
  writes.push(['b1.4.c', 'odd']);
  assert.equal(new TextDecoder().decode(await create(Buffer.from('bad'), { namespace: 'default' }, noCancel)), 'odd', 'the write answers all the same');
  assert.equal(cache.stats.seeded, 1, 'nothing kept for it');
  f.notice('containers', 'b1.6');
  writes.push(['b1.6', 'unmarked']);
  await create(Buffer.from('c2'), { namespace: 'default' }, noCancel);
  get.queue.push(['b1.6.c', 'from the service']);
  assert.equal(await get.call('get c2'), 'from the service', 'an unmarked write seeds nothing');
  cache.close();
});

test('a notice naming records drops their copies and those from several records; the copies of other records stay', async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const s = service(cache, 'snapshot', '/x.Snapshots/Stat');
  const calls = async (...bodies: string[]) => {
    const before = s.calls();
    for (const b of bodies) await s.call(b);
    return s.calls() - before;
  };
  f.notice('snapshot', 'b1.0');
  s.queue.push(['b1.0.c', 'A', 'snap/a'], ['b1.0.c', 'B', 'snap/b'], ['b1.0.c', 'ALL']);
  assert.equal(await calls('a', 'b', 'all'), 3);
  assert.equal(await calls('a', 'b', 'all'), 0, 'all three kept');
  f.notice('snapshot', 'b1.1\0snap/b\0snap/x');
  s.queue.push(['b1.1', 'B2'], ['b1.1', 'ALL2']);
  assert.equal(await calls('a'), 0, 'a copy of another record stays');
  assert.equal(await s.call('b'), 'B2', 'the named record is asked again');
  assert.equal(await s.call('all'), 'ALL2', 'so is a read of several records');
  assert.equal(cache.snapshot().entries, 1);
  cache.close();
});

test('a notice naming records after a missed one, or of another boot, drops every copy', async () => {
  const f = fakeNc();
  const cache = await started(f, opts);
  const s = service(cache, 'snapshot', '/x.Snapshots/Stat');
  f.notice('snapshot', 'b1.0');
  s.queue.push(['b1.0.c', 'A', 'snap/a']);
  await s.call('a');
  f.notice('snapshot', 'b1.1\0snap/z');
  assert.equal(cache.snapshot().entries, 1, 'the next number: only snap/z');
  // each notice drops the copy of snap/a kept in the state before it
  const cases: [string, string, string][] = [
    ['b1.3\0snap/z', 'b1.3.c', 'number 2 was missed, and what it named is not known'],
    ['b2.1\0snap/z', 'b2.1.c', 'another boot'],
    ['b2.2', 'b2.2.c', 'a notice naming nothing is about everything'],
    ['b2.x\0snap/z', '', 'a malformed state naming keys: everything goes'],
  ];
  for (const [notice, next, why] of cases) {
    f.notice('snapshot', notice);
    assert.equal(cache.snapshot().entries, 0, why);
    if (!next) break;
    s.queue.push([next, 'A', 'snap/a']);
    await s.call('a');
    assert.equal(cache.snapshot().entries, 1);
  }
  cache.close();
});

test('the copies of records stay bounded and indexed through evictions and replacements', async () => {
  const f = fakeNc();
  const cache = await started(f, { maxEntries: 2, maxBytes: 1 << 20 });
  const s = service(cache, 'snapshot', '/x.Snapshots/Stat');
  f.notice('snapshot', 'b1.0');
  for (const k of ['a', 'b', 'c']) {
    s.queue.push(['b1.0.c', k.toUpperCase(), `snap/${k}`]);
    await s.call(k);
  }
  assert.equal(cache.snapshot().entries, 2, 'a evicted');
  f.notice('snapshot', 'b1.1\0snap/a');
  assert.equal(cache.snapshot().entries, 2, 'naming the evicted one drops nothing else');
  f.notice('snapshot', 'b1.2\0snap/b\0snap/c');
  assert.deepEqual([cache.snapshot().entries, cache.snapshot().bytes], [0, 0]);
  cache.close();
});
