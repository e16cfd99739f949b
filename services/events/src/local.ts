// The events service's logic: containerd's Publish/Forward/Subscribe over NATS subjects, and
// Berth's replay of the JetStream history. NATS is this service's store: live events are plain
// subscriptions, history is the BERTH_EVENTS stream.
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { formatTimestamp, type Any, type Timestamp } from '@berth/api';
import { decodeEnvelope, eventStream, eventSubjects, H, nowEnvelope, publishEnvelope, token, type Envelope } from '@berth/bus';
import { BerthError, Code, invalidArgument, toBerthError } from '@berth/errdefs';
import { parseAll, type Filter } from '@berth/filters';
import { envelopeAdaptor } from './adaptor.js';
import { requireNamespace, validateEnvelope, validateTopic } from './validate.js';

export interface EventsOptions {
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
type Listener = (data: Uint8Array, fields: ReturnType<typeof envelopeAdaptor>) => void;

export class Events {
  private readonly fans = new Map<string, { sub: Subscription; listeners: Set<Listener> }>();
  private readonly maxPending: number;
  private readonly maxPendingBytes: number;
  constructor(private readonly o: EventsOptions) {
    this.maxPending = o.maxPending ?? 10_000;
    this.maxPendingBytes = o.maxPendingBytes ?? 64 << 20;
  }

  async publish(ctxNamespace: string | undefined, topic: string, event: Any | null): Promise<void> {
    const namespace = requireNamespace(ctxNamespace);
    try {
      validateTopic(topic);
    } catch (e) {
      throw toBerthError(e).wrap(`envelope topic "${topic}"`);
    }
    if (!event) throw invalidArgument('event must be set');
    await publishEnvelope(this.o.nc, nowEnvelope(namespace, topic, event), this.o.node);
  }

  async forward(e: Envelope | null): Promise<void> {
    if (!e) throw invalidArgument('envelope must be set');
    validateEnvelope(e);
    await publishEnvelope(this.o.nc, e, this.o.node);
  }

  /**
   * Delivers live events matching `filters` (encoded envelopes) until `signal` aborts. Like
   * containerd's, a subscription sees the events of its own node; a subscriber that falls
   * more than maxPending events or maxPendingBytes behind is cut off rather than let memory grow.
   */
  async subscribe(filters: string[], signal: AbortSignal, send: (envelope: Uint8Array) => Promise<void>): Promise<void> {
    const filter = parseFilters(filters);
    const queue: Uint8Array[] = [];
    let queuedBytes = 0;
    let wake: (() => void) | undefined;
    // rejects once the subscriber has fallen too far behind: even a send that never returns
    // (a reader that stopped reading) is abandoned then
    let cutOff!: (e: BerthError) => void;
    const cut = new Promise<never>((_, reject) => (cutOff = reject));
    cut.catch(() => undefined);
    let overflowed = false;
    // events handed to send() whose sends have not finished: pending still, they count
    let handed = 0;
    const unlisten = this.listen(subjectFor(filters), (data, fields) => {
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
    });
    const onAbort = () => wake?.();
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
        await Promise.race([Promise.all(batch.map(send)), cut]);
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
   * reaches this process once and is decoded once (its event too, when filters ask), however many subscribers there are (ten
   * `ctr events` were ten deliveries and ten decodes of every event).
   */
  private listen(subject: string, l: Listener): () => void {
    let f = this.fans.get(subject);
    if (!f) {
      const listeners = new Set<Listener>();
      const sub = this.o.nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) return;
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
              each(msg.data, fields);
            } catch {
              // one subscriber's failure is no other's
            }
          }
        },
      });
      this.fans.set(subject, (f = { sub, listeners }));
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

  /** The stream's state: what replay can deliver. */
  async info(): Promise<{ first_seq: number; last_seq: number; messages: number; bytes: number }> {
    const s = await (await jetstreamManager(this.o.nc)).streams.info(eventStream);
    return { first_seq: s.state.first_seq, last_seq: s.state.last_seq, messages: s.state.messages, bytes: s.state.bytes };
  }

  /**
   * Delivers stored events from a sequence number or a time, in order, each with its sequence
   * number; with `follow`, goes on with new events as they are stored, so a subscriber that
   * resumes from its last seq + 1 sees every event exactly once.
   */
  async replay(
    req: { filters: string[]; since_seq: number; since_time: Timestamp | null; follow: boolean },
    signal: AbortSignal,
    send: (ev: { seq: number; envelope: Envelope }) => Promise<void>,
  ): Promise<void> {
    const filter = parseFilters(req.filters ?? []);
    const { last_seq } = await this.info();
    const opts: Record<string, unknown> = { deliver_policy: DeliverPolicy.All };
    if (req.since_seq > 0) {
      if (!req.follow && req.since_seq > last_seq) return;
      Object.assign(opts, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: req.since_seq });
    } else if (req.since_time && (Number(req.since_time.seconds) || req.since_time.nanos)) {
      const { seconds, nanos } = req.since_time;
      // protobuf's valid range (years 1 to 9999), which is also what nats-server parses
      if (!(Number(seconds) >= -62135596800 && Number(seconds) <= 253402300799 && nanos >= 0 && nanos < 1e9)) {
        throw invalidArgument(`since_time: timestamp out of range (seconds ${seconds}, nanos ${nanos})`);
      }
      Object.assign(opts, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: formatTimestamp(req.since_time) });
    }
    if (!req.follow && last_seq === 0) return;
    const subject = subjectFor(req.filters ?? []);
    // a single string: nats-server 2.9 takes one filter subject (a list needs 2.10)
    if (subject !== eventSubjects) opts.filter_subjects = subject;
    const consumer = await jetstream(this.o.nc).consumers.get(eventStream, opts);
    if (!req.follow && (await consumer.info()).num_pending === 0) return;
    const messages = await consumer.consume();
    const onAbort = () => void messages.stop();
    signal.addEventListener('abort', onAbort);
    try {
      for await (const m of messages) {
        let e: Envelope | undefined;
        try {
          e = decodeEnvelope(m.data);
        } catch {
          e = undefined; // not an envelope (someone published garbage on an event subject): skip it
        }
        if (e && filter.match(envelopeAdaptor(e))) await send({ seq: m.seq, envelope: e });
        if (!req.follow && (m.seq >= last_seq || m.info.pending === 0)) break;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      await messages.close().catch(() => undefined);
      await consumer.delete().catch(() => undefined);
    }
  }
}

