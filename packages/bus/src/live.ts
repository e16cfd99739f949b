// containerd's Events.Subscribe over the plain NATS subjects events are published on. Shared by
// the events service (Subscribe for bus clients) and the gateway, which answers its gRPC clients'
// Subscribe itself: an exit event then reaches dockerd without two more hops through the events
// service and back, and both answer with the same filters, errors and cut-offs.
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { BerthError, Code, invalidArgument, toBerthError, unavailable } from '@berth/errdefs';
import { parseAll, type Filter } from '@berth/filters';
import { decodeEnvelope, eventSubjects, type Envelope } from './events.js';
import { envelopeAdaptor } from './eventfields.js';
import { H } from './headers.js';
import { token } from './subjects.js';

export interface LiveEventsOptions {
  nc: NatsConnection;
  node: string;
  /** events a subscriber may fall behind by before it is cut off */
  maxPending?: number;
  /** bytes of events a subscriber may fall behind by before it is cut off: events are up to
   * NATS's max_payload each, so a count alone does not bound memory */
  maxPendingBytes?: number;
}

export function parseFilters(filters: string[]): Filter {
  try {
    return parseAll(filters);
  } catch (e) {
    // containerd's words (its code is Unknown there; a malformed filter is the caller's error)
    throw invalidArgument(`subscription error: failed parsing subscription filters: ${toBerthError(e).message}`);
  }
}

const simpleTerm = /^\s*(namespace|topic)\s*==\s*"?([^",|]+?)"?\s*$/;

/**
 * The narrowest subject that still carries every event the filters can match. Only a single
 * filter made of `namespace==` and `topic==` terms narrows it; anything else listens to all
 * events and the filter does the rest.
 */
export function subjectFor(filters: string[]): string {
  if (filters.length !== 1 || filters[0]!.includes('|')) return eventSubjects;
  let ns = '*';
  let topic = '>';
  for (const term of filters[0]!.split(',')) {
    const m = simpleTerm.exec(term);
    if (!m) return eventSubjects;
    if (m[1] === 'namespace') ns = token(m[2]!);
    else if (m[2]!.startsWith('/') && m[2]!.length > 1) topic = m[2]!.slice(1).split('/').map(token).join('.');
    else return eventSubjects;
  }
  return `berth.events.${ns}.${topic}`;
}

/** one subscriber's share of a subject's events: the raw envelope and its fields for filters */
interface Listener {
  deliver(data: Uint8Array, fields: ReturnType<typeof envelopeAdaptor>): void;
  /** the subscription can deliver no more (NATS went away): the subscriber is told, never left waiting */
  fail(e: BerthError): void;
}

interface Fan {
  sub: Subscription;
  listeners: Set<Listener>;
}

export class LiveEvents {
  private readonly fans = new Map<string, Fan>();
  private readonly maxPending: number;
  private readonly maxPendingBytes: number;
  private connected = true;

  constructor(private readonly o: LiveEventsOptions) {
    this.maxPending = o.maxPending ?? 10_000;
    this.maxPendingBytes = o.maxPendingBytes ?? 64 << 20;
    void this.watch();
  }

  /**
   * Core NATS does not keep what is published while a connection is down: a subscriber that
   * stayed on would silently miss those events, so every subscription ends with Unavailable at
   * a disconnect (a client subscribes again, as dockerd does), and none starts until reconnected.
   */
  private async watch(): Promise<void> {
    const lost = (why: string) => {
      this.connected = false;
      this.failAll(unavailable(`events: ${why}`));
    };
    try {
      for await (const s of this.o.nc.status()) {
        if (s.type === 'disconnect') lost('connection to NATS lost');
        else if (s.type === 'reconnect') this.connected = true;
      }
    } catch {
      // the status feed ends with the connection
    }
    lost('connection to NATS closed');
  }

  private failAll(e: BerthError): void {
    for (const [subject, fan] of [...this.fans]) {
      this.fans.delete(subject);
      fan.sub.unsubscribe();
      for (const l of fan.listeners) l.fail(e);
    }
  }

  /** The subjects this process holds a NATS subscription on, and the subscribers sharing each. */
  subjects(): Map<string, number> {
    return new Map([...this.fans].map(([s, f]) => [s, f.listeners.size]));
  }

  /**
   * Delivers live events matching `filters` (encoded envelopes) until `signal` aborts. Like
   * containerd's, a subscription sees the events of its own node; a subscriber that falls
   * more than maxPending events or maxPendingBytes behind is cut off rather than let memory grow.
   */
  async subscribe(filters: string[], signal: AbortSignal, send: (envelope: Uint8Array) => Promise<void>): Promise<void> {
    const filter = parseFilters(filters);
    if (!this.connected || this.o.nc.isClosed()) throw unavailable('events: not connected to NATS');
    const queue: Uint8Array[] = [];
    let queuedBytes = 0;
    let wake: (() => void) | undefined;
    // rejects once the subscriber has fallen too far behind or its subscription ended: even a
    // send that never returns (a reader that stopped reading) is abandoned then
    let cutOff!: (e: BerthError) => void;
    const cut = new Promise<never>((_, reject) => (cutOff = reject));
    cut.catch(() => undefined);
    let overflowed = false;
    // events handed to send() whose sends have not finished: pending still, they count
    let handed = 0;
    const unlisten = this.listen(subjectFor(filters), {
      deliver: (data, fields) => {
        if (overflowed || !filter.match(fields)) return;
        if (queue.length + handed >= this.maxPending) {
          overflowed = true;
          cutOff(new BerthError(Code.ResourceExhausted, `events: subscriber too slow: more than ${this.maxPending} events pending, cut off`));
        } else if (queuedBytes + data.length > this.maxPendingBytes) {
          overflowed = true;
          cutOff(new BerthError(Code.ResourceExhausted, `events: subscriber too slow: more than ${this.maxPendingBytes} bytes of events pending, cut off`));
        } else {
          queue.push(data);
          queuedBytes += data.length;
        }
        wake?.();
      },
      fail: (e) => {
        overflowed = true;
        cutOff(e);
      },
    });
    // a send to a client that went away may never finish: the abort ends the wait for it too
    let onAbort!: () => void;
    const aborted = new Promise<void>((r) => (onAbort = () => (wake?.(), r())));
    signal.addEventListener('abort', onAbort);
    try {
      while (!signal.aborted) {
        if (!queue.length) {
          await Promise.race([new Promise<void>((r) => (wake = r)), cut]);
          wake = undefined;
          continue;
        }
        // all that waits, handed over at once and in order: the stream sends what its credit
        // allows in this turn (one batched frame) and the rest as credit comes, instead of an
        // await and a wake-up per event
        const batch = queue.splice(0);
        let bytes = 0;
        for (const b of batch) bytes += b.length;
        handed = batch.length;
        await Promise.race([Promise.all(batch.map(send)), cut, aborted]);
        handed = 0;
        queuedBytes -= bytes;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      unlisten();
    }
  }

  /**
   * Subscribers whose filters narrow to the same subject share one NATS subscription: each event
   * reaches this process once and is decoded once (its event too, when filters ask), however many
   * subscribers there are (ten `ctr events` were ten deliveries and ten decodes of every event).
   */
  private listen(subject: string, l: Listener): () => void {
    let f = this.fans.get(subject);
    if (!f) {
      const listeners = new Set<Listener>();
      let sub: Subscription;
      try {
        sub = this.o.nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err) {
              // refused (a permissions violation) or ended by the connection: say so to each subscriber
              if (this.fans.get(subject) === fan) this.fans.delete(subject);
              for (const each of listeners) each.fail(unavailable(`events: subscription to ${subject}: ${err.message}`));
              return;
            }
            // like containerd's, a subscription sees the events of its own node
            const from = msg.headers?.get(H.node);
            if (from && from !== this.o.node) return;
            let e: Envelope;
            try {
              e = decodeEnvelope(msg.data);
            } catch {
              return; // not an envelope: somebody published garbage on an event subject
            }
            // one adaptor for all: an event's own fields are decoded once, by the first filter that asks
            const fields = envelopeAdaptor(e);
            for (const each of listeners) {
              try {
                each.deliver(msg.data, fields);
              } catch {
                // one subscriber's failure is no other's
              }
            }
          },
        });
      } catch (e) {
        throw unavailable(`events: subscribing to ${subject}: ${(e as Error).message}`);
      }
      const fan: Fan = { sub, listeners };
      this.fans.set(subject, (f = fan));
    }
    const fan = f;
    fan.listeners.add(l);
    return () => {
      fan.listeners.delete(l);
      if (fan.listeners.size === 0 && this.fans.get(subject) === fan) {
        fan.sub.unsubscribe();
        this.fans.delete(subject);
      }
    };
  }
}
