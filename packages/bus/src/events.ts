// Publishing containerd events on the bus: the envelope containerd's events API carries
// (timestamp, namespace, topic, event as Any), on `berth.events.<namespace>.<topic>`, into the
// JetStream stream that keeps the history. A publish waits for the stream's ack: an event that
// was not stored is an error the caller sees, never a silent loss.
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, RetentionPolicy, StorageType, DiscardPolicy } from '@nats-io/jetstream';
import { codec, nowTimestamp, toAny, type Any, type Timestamp } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import { H, headers } from './headers.js';
import { eventSubject } from './subjects.js';

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

const clients = new WeakMap<NatsConnection, ReturnType<typeof jetstream>>();
/** One JetStream client per connection: every event of a service goes through it. */
function jetstreamOf(nc: NatsConnection): ReturnType<typeof jetstream> {
  let js = clients.get(nc);
  if (!js) clients.set(nc, (js = jetstream(nc)));
  return js;
}

/** Publishes an event and waits until the history stored it; `node` says where it happened. */
export async function publishEnvelope(nc: NatsConnection, e: Envelope, node?: string): Promise<number> {
  const h = headers();
  if (node) h.set(H.node, node);
  try {
    const ack = await jetstreamOf(nc).publish(eventSubject(e.namespace, e.topic), encodeEnvelope(e), { headers: h });
    return ack.seq;
  } catch (err) {
    throw new BerthError(Code.Unavailable, `publishing event ${e.topic}: ${(err as Error).message}`);
  }
}
