// Publishing containerd events on the bus: the envelope containerd's events API carries
// (timestamp, namespace, topic, event as Any), on `berth.events.<namespace>.<topic>`.
import type { NatsConnection } from '@nats-io/nats-core';
import { codec, nowTimestamp, toAny, type Any, type Timestamp } from '@berth/api';
import { H, headers } from './headers.js';
import { eventSubject } from './subjects.js';

export interface Envelope {
  timestamp: Timestamp;
  namespace: string;
  topic: string;
  event: Any;
}

export const envelopeType = 'containerd.services.events.v1.Envelope';

export function envelope(namespace: string, topic: string, eventType: string, event: Record<string, unknown>): Envelope {
  return { timestamp: nowTimestamp(), namespace, topic, event: toAny(eventType, event) };
}

export function encodeEnvelope(e: Envelope): Uint8Array {
  return codec(envelopeType).encode(e as unknown as Record<string, unknown>);
}

/** Publishes an event envelope; `node` says where it happened (header `berth-node`). */
export function publishEnvelope(nc: NatsConnection, e: Envelope, node?: string): void {
  const h = headers();
  if (node) h.set(H.node, node);
  nc.publish(eventSubject(e.namespace, e.topic), encodeEnvelope(e), { headers: h });
}
