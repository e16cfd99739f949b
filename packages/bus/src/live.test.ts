// LiveEvents' ends, against a real nats-server: a subscriber whose client went (while a send
// hangs) lets go of its subscription, and a lost connection ends every subscriber with
// Unavailable instead of leaving it waiting for events that core NATS will never deliver.
// (Delivery, filters and cut-offs: services/events/src/events.test.ts and the gateway's tests.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { Code, type BerthError } from '@berth/errdefs';
import { encodeEnvelope, envelope } from './events.js';
import { LiveEvents } from './live.js';
import { eventSubject } from './subjects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
let natsd: NatsServer;
let nc: NatsConnection;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'berth-live-'));
  natsd = await startNatsServer({ dir });
  nc = await connect({ servers: natsd.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
});
after(async () => {
  await nc?.close();
  await natsd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const publish = (ns: string) => nc.publish(eventSubject(ns, '/x/y'), encodeEnvelope(envelope(ns, '/x/y', 'containerd.events.ContainerDelete', { id: 'x' })));

test('an abort ends a subscriber whose send never returns, and frees its subscription', { timeout: 10_000 }, async () => {
  const live = new LiveEvents({ nc, node: 'n1' });
  const ac = new AbortController();
  let sent = 0;
  const done = live.subscribe(['namespace==hung'], ac.signal, () => (sent++, new Promise(() => {})));
  await sleep(50);
  assert.deepEqual([...live.subjects()], [['berth.events.hung.>', 1]]);
  publish('hung');
  await sleep(100);
  assert.equal(sent, 1);
  ac.abort();
  await done;
  assert.equal(live.subjects().size, 0);
});

test('a lost connection ends subscribers with Unavailable; none starts until it is back', { timeout: 20_000 }, async () => {
  const live = new LiveEvents({ nc, node: 'n1' });
  const outcome = live.subscribe([], new AbortController().signal, async () => {}).then(
    () => 'ended',
    (e: BerthError) => e,
  );
  await sleep(50);
  const port = natsd.port;
  await natsd.stop();
  const e = await Promise.race([outcome, sleep(5000).then(() => 'still waiting')]);
  assert.equal((e as BerthError).code, Code.Unavailable, String(e));
  assert.equal(live.subjects().size, 0);
  await assert.rejects(live.subscribe([], new AbortController().signal, async () => {}), (err: BerthError) => err.code === Code.Unavailable);

  natsd = await startNatsServer({ dir, port });
  for (let i = 0; i < 100 && nc.isClosed() === false; i++) {
    try {
      await nc.flush();
      break;
    } catch {
      await sleep(100);
    }
  }
  await sleep(100); // the reconnect's status reaches LiveEvents
  const ac = new AbortController();
  let got = 0;
  const again = live.subscribe(['namespace==back'], ac.signal, async () => void got++);
  await sleep(50);
  publish('back');
  await sleep(100);
  ac.abort();
  await again;
  assert.equal(got, 1);
});
