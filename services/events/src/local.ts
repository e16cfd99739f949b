// The events service's logic: containerd's Publish/Forward/Subscribe over NATS subjects, and
// Berth's replay of the JetStream history. NATS is this service's store: live events are plain
// subscriptions, history is the BERTH_EVENTS stream.
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { formatTimestamp, type Any, type Timestamp } from '@berth/api';
import { decodeEnvelope, envelopeAdaptor, eventStream, eventSubjects, LiveEvents, nowEnvelope, parseFilters, publishEnvelope, subjectFor, type Envelope, type LiveEventsOptions } from '@berth/bus';
import { invalidArgument, toBerthError } from '@berth/errdefs';
import { requireNamespace, validateEnvelope, validateTopic } from './validate.js';

export type EventsOptions = LiveEventsOptions;

export class Events {
  private readonly live: LiveEvents;
  constructor(private readonly o: EventsOptions) {
    this.live = new LiveEvents(o);
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

  /** Live events for bus clients (@berth/bus LiveEvents; the gateway serves its own the same way). */
  subscribe(filters: string[], signal: AbortSignal, send: (envelope: Uint8Array) => Promise<void>): Promise<void> {
    return this.live.subscribe(filters, signal, send);
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

