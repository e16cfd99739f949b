// `berth gc`: a garbage collection now, through the gateway's berth.gc.v1.GC/Collect, and what it
// did: one line of figures (or the JSON answer with --json).
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import { codec, method } from '@berth/api';

export async function gcCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      address: { type: 'string', default: process.env.CONTAINERD_ADDRESS ?? '/run/berth/berth.sock' },
      json: { type: 'boolean', default: false },
    },
  });
  const m = method('/berth.gc.v1.GC/Collect');
  const Req = codec(m.requestType);
  const Res = codec(m.responseType);
  const client = new grpc.Client(`unix:${values.address}`, grpc.credentials.createInsecure());
  try {
    const r = await new Promise<any>((resolve, reject) => {
      client.makeUnaryRequest(m.path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, Req.encode({}), (err, res) => (err ? reject(new Error(err.details || err.message)) : resolve(Res.decode(res!))));
    });
    if (values.json) {
      process.stdout.write(JSON.stringify(r) + '\n');
      return;
    }
    const ms = (ns: number) => (Number(ns) / 1e6).toFixed(1);
    process.stdout.write(
      `collected ${r.epoch} in ${ms(r.duration_ns)} ms (writes held ${ms(r.barrier_ns)} ms): marked ${r.marked}; removed ` +
        `content ${r.content_removed}, blobs ${r.blobs_removed}, ingests ${r.ingests_removed}, snapshots ${r.snapshots_removed}, leases ${r.leases_removed}; freed ${r.bytes_freed} bytes\n`,
    );
  } finally {
    client.close();
  }
}
