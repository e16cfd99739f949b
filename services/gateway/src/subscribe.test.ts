// The gateway's own Events.Subscribe against a real nats-server and a real gRPC client: what it
// delivers, its errors, and that a client that goes frees the NATS subscription (observed from
// NATS: a request on the subject finds no responder any more). No events service runs here.
// (test/src/events.test.ts runs it in a stack with the events service stopped.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@berth/natsd';
import { codec, fromAny, method } from '@berth/api';
import { decodeEnvelope, encodeEnvelope, envelope, eventSubject, H, headers } from '@berth/bus';
import { passthrough } from './forward.js';
import { subscribeHandler, subscribePath } from './subscribe.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const id = (b: Buffer) => b;

describe('the gateway answers Events.Subscribe itself', () => {
  let dir: string;
  let natsd: NatsServer;
  let nc: NatsConnection;
  let server: grpc.Server;
  let client: grpc.Client;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-gw-subscribe-'));
    natsd = await startNatsServer({ dir });
    nc = await connect({ servers: natsd.url });
    server = new grpc.Server();
    server.addService({ Subscribe: passthrough(method(subscribePath)) }, { Subscribe: subscribeHandler({ nc, node: 'n1', maxPending: 20 }) });
    const sock = join(dir, 'gw.sock');
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
    client = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    server?.forceShutdown();
    await nc?.close();
    await natsd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A Subscribe call: the events' ids as they come, and how it ended. */
  function subscribe(filters: string[]) {
    const req = Buffer.from(codec(method(subscribePath).requestType).encode({ filters }));
    const call = client.makeServerStreamRequest(subscribePath, id, id, req, new grpc.Metadata());
    const ids: string[] = [];
    call.on('data', (b: Buffer) => void ids.push(fromAny<{ id: string }>(decodeEnvelope(b).event).id));
    const ended = new Promise<grpc.ServiceError | undefined>((resolve) => {
      call.on('error', (e: grpc.ServiceError) => resolve(e));
      call.on('end', () => resolve(undefined));
    });
    return { call, ids, ended };
  }

  /** An event as a service publishes it (core NATS here: this server keeps no stream). */
  function publish(ns: string, topic: string, eventId: string, node = 'n1'): void {
    const h = headers();
    h.set(H.node, node);
    nc.publish(eventSubject(ns, topic), encodeEnvelope(envelope(ns, topic, 'containerd.events.ContainerDelete', { id: eventId })), { headers: h });
  }

  /** Whether anything in this NATS listens on `subject`: a request finds no responder, or times out. */
  async function listened(subject: string): Promise<boolean> {
    try {
      await nc.request(subject, new Uint8Array([0xff]), { timeout: 300 });
      return true;
    } catch (e) {
      if (/no responders/i.test(String(e))) return false;
      if (/timeout/i.test(String(e))) return true;
      throw e;
    }
  }

  test('delivers its node\'s events that match the filters, in order', async () => {
    const s = subscribe(['namespace==gw,topic~="/containers/"']);
    await sleep(200);
    for (let i = 0; i < 10; i++) publish('gw', i % 2 ? '/containers/delete' : '/tasks/exit', `e${i}`);
    publish('other', '/containers/delete', 'elsewhere');
    publish('gw', '/containers/delete', 'other-node', 'n2');
    await sleep(300);
    s.call.cancel();
    assert.deepEqual(s.ids, ['e1', 'e3', 'e5', 'e7', 'e9']);
  });

  test('a malformed filter is InvalidArgument, in containerd\'s words', async () => {
    const e = await subscribe(['topic==']).ended;
    assert.equal(e?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(e!.details, /^subscription error: failed parsing subscription filters: /);
  });

  test('subscribers of one subject share a NATS subscription; it goes with the last client', async () => {
    const subject = 'berth.events.freed.x.y';
    const filter = 'namespace==freed,topic=="/x/y"';
    assert.equal(await listened(subject), false);
    const a = subscribe([filter]);
    const b = subscribe([filter]);
    await sleep(200);
    assert.equal(await listened(subject), true);
    publish('freed', '/x/y', 'both');
    await sleep(200);
    assert.deepEqual([a.ids, b.ids], [['both'], ['both']]);
    a.call.cancel();
    await sleep(200);
    assert.equal(await listened(subject), true, 'b still listens');
    publish('freed', '/x/y', 'b-only');
    await sleep(200);
    b.call.cancel();
    await sleep(200);
    assert.equal(await listened(subject), false, 'the last client gone: no subscription left');
    assert.deepEqual(b.ids, ['both', 'b-only']);
  });

  test('a client that stops reading is cut off with ResourceExhausted', async () => {
    const s = subscribe(['namespace==slow']);
    s.call.pause(); // reads nothing: HTTP/2's windows fill, then the gateway's pending events
    await sleep(200);
    const big = 'x'.repeat(64 << 10);
    for (let i = 0; i < 100 && !(await Promise.race([s.ended.then(() => true), sleep(5).then(() => false)])); i++) publish('slow', '/x/y', `${i}-${big}`);
    s.call.resume();
    const e = await s.ended;
    assert.equal(e?.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(e!.details, /subscriber too slow/);
  });
});
