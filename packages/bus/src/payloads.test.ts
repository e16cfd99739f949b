import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { BusClient } from './index.js';
import { payloadsPresized } from './payloads.js';

let dir: string;
let natsd: NatsServer;
let a: NatsConnection;
let b: NatsConnection;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'berth-payloads-'));
  natsd = await startNatsServer({ dir });
  a = await connect({ servers: natsd.url });
  b = await connect({ servers: natsd.url });
  new BusClient(b); // loading the bus is what presizes
});

after(async () => {
  await a.close();
  await b.close();
  await natsd.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('messages that span many socket reads arrive whole, each in a buffer of its own size', async () => {
  assert.ok(payloadsPresized());
  const sizes = [0, 1, 65_000, 65_536, 70_000, (1 << 20) + 17, 3 << 20, 200];
  const sent = sizes.map((n) => randomFillSync(Buffer.alloc(n)));
  const got: Uint8Array[] = [];
  const done = new Promise<void>((resolve) => {
    b.subscribe('payloads.test', {
      callback: (_err, msg) => {
        got.push(msg.data);
        if (got.length === sent.length) resolve();
      },
    });
  });
  await b.flush();
  for (const s of sent) a.publish('payloads.test', s);
  await done;
  for (let i = 0; i < sent.length; i++) {
    assert.ok(Buffer.from(got[i]!).equals(sent[i]!), `message ${i} (${sizes[i]} bytes) arrived intact`);
    // a large one no longer sits in a doubled buffer
    if (sizes[i]! > 1 << 17) assert.equal(got[i]!.buffer.byteLength, sizes[i], `message ${i} held in a buffer of its size`);
  }
});
