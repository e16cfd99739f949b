// `berth events`: the event history through the gateway's Replay API, from a sequence number or
// a time, optionally following new events. One line per event: the sequence number, then the
// envelope (its JSON form with --json, a ctr-like line otherwise).
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import { codec, fromAny, method, toTimestamp } from '@berth/api';

export async function eventsCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      address: { type: 'string', default: process.env.CONTAINERD_ADDRESS ?? '/run/berth/berth.sock' },
      'since-seq': { type: 'string' },
      since: { type: 'string' },
      follow: { type: 'boolean', short: 'f', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const m = method('/berth.events.v1.Replay/Replay');
  const Req = codec(m.requestType);
  const Res = codec(m.responseType);
  const req: Record<string, unknown> = { filters: positionals, follow: values.follow };
  if (values['since-seq']) req.since_seq = Number(values['since-seq']);
  if (values.since) {
    const t = Date.parse(values.since);
    if (Number.isNaN(t)) throw new Error(`--since: not a time: ${values.since}`);
    req.since_time = toTimestamp(t);
  }
  const client = new grpc.Client(`unix:${values.address}`, grpc.credentials.createInsecure());
  const call = client.makeServerStreamRequest(m.path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, Req.encode(req));
  await new Promise<void>((resolve, reject) => {
    call.on('data', (b: Buffer) => {
      const ev = Res.decode(b);
      const e = ev.envelope;
      if (values.json) {
        process.stdout.write(JSON.stringify({ seq: ev.seq, namespace: e.namespace, topic: e.topic, timestamp: e.timestamp, event: safeEvent(e.event) }) + '\n');
      } else {
        const ts = new Date(Number(e.timestamp.seconds) * 1000 + Math.floor(e.timestamp.nanos / 1e6)).toISOString();
        process.stdout.write(`${ev.seq} ${ts} ${e.namespace} ${e.topic} ${JSON.stringify(safeEvent(e.event))}\n`);
      }
    });
    call.on('error', reject);
    call.on('end', () => resolve());
  });
  client.close();
}

function safeEvent(any: { type_url: string; value: Uint8Array }): unknown {
  try {
    return { '@type': any.type_url, ...(fromAny(any) as object) };
  } catch {
    return { '@type': any.type_url };
  }
}
