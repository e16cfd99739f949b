// Publishing containerd events on the bus: the envelope containerd's events API carries
// (timestamp, namespace, topic, event as Any), on `berth.events.<namespace>.<topic>`, into the
// JetStream stream that keeps the history. A publish waits for the stream's ack: an event that
// was not stored is an error the caller sees, never a silent loss.
import type { MsgHdrs, NatsConnection } from '@nats-io/nats-core';
import { jetstreamManager, RetentionPolicy, StorageType, DiscardPolicy } from '@nats-io/jetstream';
import { codec, nowTimestamp, toAny, type Any, type Timestamp } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import { H, headers } from './headers.js';
import { eventSubject } from './subjects.js';
import { streamMux } from './mux.js';
import { envelopeJson } from './eventjson.js';

export interface Envelope {
  timestamp: Timestamp;
  namespace: string;
  topic: string;
  event: Any;
}

export const envelopeType = 'containerd.services.events.v1.Envelope';
export const eventStream = 'BERTH_EVENTS';
export const eventSubjects = 'berth.events.>';

export function envelope(namespace: string, topic: string, eventType: string, event: Record<string, unknown>): Envelope {
  return nowEnvelope(namespace, topic, toAny(eventType, event));
}

/** An envelope stamped now around an already packed event. */
export function nowEnvelope(namespace: string, topic: string, event: Any): Envelope {
  return { timestamp: nowTimestamp(), namespace, topic, event };
}

export function encodeEnvelope(e: Envelope): Uint8Array {
  return codec(envelopeType).encode(e as unknown as Record<string, unknown>);
}

export function decodeEnvelope(b: Uint8Array): Envelope {
  return codec<Envelope>(envelopeType).decode(b);
}

export interface HistoryLimits {
  /** nanoseconds; 0 keeps events until max_bytes pushes them out */
  maxAgeNs: number;
  maxBytes: number;
}

/** Parses `24h`, `30m`, `90s`, `1h30m` into nanoseconds. */
export function durationNs(s: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
  const unit: Record<string, number> = { ms: 1e6, s: 1e9, m: 60e9, h: 3600e9, d: 86400e9 };
  let total = 0;
  let seen = '';
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * unit[m[2]!]!;
    seen += m[0];
  }
  if (seen !== s || s === '') throw new Error(`not a duration: "${s}" (use e.g. 24h, 30m, 90s)`);
  return total;
}

/** Creates the history stream, or brings its limits up to date. Idempotent. */
export async function ensureEventStream(nc: NatsConnection, limits: HistoryLimits): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const config = {
    name: eventStream,
    subjects: [eventSubjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: limits.maxAgeNs,
    max_bytes: limits.maxBytes,
  };
  try {
    await jsm.streams.info(eventStream);
    await jsm.streams.update(eventStream, config);
  } catch (err) {
    if (!/stream not found/i.test(String(err))) throw err;
    try {
      await jsm.streams.add(config);
    } catch (e) {
      // another process created it in between
      if (!/already in use|already exists/i.test(String(e))) throw e;
    }
  }
}

const ackDecoder = new TextDecoder();

/**
 * A JetStream publish: the message goes to its subject with a reply inbox, and the stream that
 * stores it answers there with its sequence number. Through the connection's mux rather than
 * nats.js's request(), which made an Error (a stack capture) for every request it completed:
 * a tenth of the events service's time. Resolves with the stream sequence once stored; rejects
 * when no stream takes the subject, the stream refuses it, the connection drops or no ack comes
 * within `timeout` ms.
 */
export function storeMessage(nc: NatsConnection, subject: string, data: Uint8Array, h: MsgHdrs, timeout = 5000): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const mux = streamMux(nc);
    let timer: NodeJS.Timeout | undefined;
    const finish = (f: () => void) => {
      clearTimeout(timer);
      mux.unregister(inbox);
      f();
    };
    const inbox = mux.register((err, msg) => {
      if (err) return finish(() => reject(err));
      if (msg.headers?.hasError && msg.headers.code === 503) return finish(() => reject(new Error(`no stream stores ${subject}`)));
      let ack: { stream?: string; seq?: number; error?: { description?: string; code?: number } };
      try {
        ack = JSON.parse(ackDecoder.decode(msg.data));
      } catch {
        return finish(() => reject(new Error('invalid ack response')));
      }
      if (ack.error) return finish(() => reject(new Error(ack.error!.description ?? `JetStream error ${ack.error!.code}`)));
      if (!ack.stream || typeof ack.seq !== 'number') return finish(() => reject(new Error('invalid ack response')));
      finish(() => resolve(ack.seq!));
    });
    timer = setTimeout(() => finish(() => reject(new Error(`no ack from the stream within ${timeout} ms`))), timeout);
    try {
      nc.publish(subject, data, { reply: inbox, headers: h });
    } catch (e) {
      finish(() => reject(e));
    }
  });
}

/**
 * Stores an encoded event envelope in the stream (storeMessage) and, in the same write, publishes
 * its JSON form on `berth.json.<subject>` for subscribers without protobuf. Whoever stores an
 * event mirrors it (a service's outbox, the events service for Publish and Forward): a mirror in
 * the events service was two more trips through nats-server and a wake-up of that process for
 * every event, a tenth of a `ctr run`'s CPU. Like the event on its core subject, the mirror goes
 * out with every attempt (JetStream drops a retry's copy from the stream, not from subscribers).
 */
export function storeEvent(nc: NatsConnection, subject: string, data: Uint8Array, h: MsgHdrs): Promise<number> {
  const stored = storeMessage(nc, subject, data, h);
  let json: string | undefined;
  try {
    json = envelopeJson(data);
  } catch {
    // not an envelope: nothing to mirror
  }
  try {
    if (json !== undefined) nc.publish(`berth.json.${subject.slice('berth.'.length)}`, json, { headers: h });
  } catch {
    // a closed connection: the store above fails and says so
  }
  return stored;
}

/** Publishes an event and waits until the history stored it; `node` says where it happened. */
export async function publishEnvelope(nc: NatsConnection, e: Envelope, node?: string): Promise<number> {
  const h = headers();
  if (node) h.set(H.node, node);
  try {
    return await storeEvent(nc, eventSubject(e.namespace, e.topic), encodeEnvelope(e), h);
  } catch (err) {
    throw new BerthError(Code.Unavailable, `publishing event ${e.topic}: ${(err as Error).message}`);
  }
}
