// Streams through the socket when NATS fails under them: nats-server killed (the supervisor
// starts it again on the same port) in the middle of a content Read, a content Write and an
// events Subscribe. Each must fail with Unavailable within a few seconds or complete correctly:
// never hang, never skip bytes. And a cleanly ended Read drained far slower than any liveness
// timeout completes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { codec } from '@berth/api';
import { ctr, sleep, startStack, until, type Stack } from './harness.js';

const MiB = 1 << 20;
const P = '/containerd.services.content.v1.Content/';
const WReq = codec('containerd.services.content.v1.WriteContentRequest');
const WRes = codec('containerd.services.content.v1.WriteContentResponse');
const RReq = codec('containerd.services.content.v1.ReadContentRequest');
const RRes = codec('containerd.services.content.v1.ReadContentResponse');
const id = (b: Buffer) => b;
const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** How a call through the socket ended: ok, or the gRPC status it failed with. */
interface Outcome {
  code: number;
  details?: string;
}

describe('faults: nats-server restarted under open streams', () => {
  let stack: Stack;
  let client: grpc.Client;
  const ns = `it-faults-${process.pid}`;
  const big = randomFillSync(Buffer.alloc(64 * MiB));
  const bigDigest = sha(big);

  const md = () => {
    const m = new grpc.Metadata();
    m.set('containerd-namespace', ns);
    return m;
  };

  /** containerd's Write pattern: one request per answer, 1 MiB chunks; `onChunk` after each answer. */
  function write(data: Buffer, ref: string, onChunk: (i: number) => void = () => undefined): Promise<Outcome & { digest?: string }> {
    const digest = sha(data);
    return new Promise((resolve) => {
      const call = client.makeBidiStreamRequest(P + 'Write', id, id, md());
      const chunks = Math.ceil(data.length / MiB);
      let i = -1;
      let committed: string | undefined;
      const next = () => {
        i++;
        if (i === 0) call.write(Buffer.from(WReq.encode({ action: 'STAT', ref, total: data.length, expected: digest })));
        else if (i <= chunks) call.write(Buffer.from(WReq.encode({ action: 'WRITE', ref, offset: (i - 1) * MiB, data: data.subarray((i - 1) * MiB, i * MiB) })));
        else if (i === chunks + 1) call.write(Buffer.from(WReq.encode({ action: 'COMMIT', ref, offset: data.length, total: data.length, expected: digest, labels: { 'containerd.io/gc.root': 'faults test' } })));
        else call.end();
      };
      call.on('data', (b: Buffer) => {
        const r = WRes.decode(b);
        if (i === chunks + 1) committed = r.digest;
        if (i >= 1 && i <= chunks) onChunk(i);
        if (i <= chunks + 1) next();
      });
      call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }));
      call.on('end', () => resolve({ code: 0, digest: committed }));
      next();
    });
  }

  /**
   * Reads a blob, drained at `rate` bytes/s (the client pauses its stream: gRPC flow control
   * pushes back to the service). Every message must start where the previous one ended.
   */
  function read(digest: string, rate: number, onBytes: (n: number) => void = () => undefined): Promise<Outcome & { n: number; digest: string; at: number; gap?: string }> {
    return new Promise((resolve) => {
      const call = client.makeServerStreamRequest(P + 'Read', id, id, Buffer.from(RReq.encode({ digest })), md());
      const h = createHash('sha256');
      const t0 = Date.now();
      let n = 0;
      let gap: string | undefined;
      let over = false;
      call.on('data', (b: Buffer) => {
        if (over) return; // what a paused stream still held when it failed
        const r = RRes.decode(b);
        if (Number(r.offset) !== n) gap ??= `a message at offset ${r.offset} after ${n} bytes`;
        h.update(r.data);
        n += r.data.length;
        onBytes(n);
        const wait = t0 + (n / rate) * 1000 - Date.now();
        if (wait > 0) {
          call.pause();
          setTimeout(() => call.resume(), wait);
        }
      });
      const done = (o: Outcome) => {
        if (over) return;
        over = true;
        resolve({ ...o, n, gap, digest: 'sha256:' + h.digest('hex'), at: Date.now() });
      };
      call.on('error', (e: grpc.ServiceError) => done({ code: e.code, details: e.details }));
      call.on('end', () => done({ code: 0 }));
    });
  }

  /** Kills nats-server like a crash; resolves with the time of the kill. */
  function killNats(): number {
    process.kill(stack.pid('nats-server'), 'SIGKILL');
    return Date.now();
  }

  /** Waits until the stack serves calls again after a restart of nats-server. */
  async function recovered(): Promise<void> {
    await until(async () => (await ctr(stack.sock, '-n', ns, 'content', 'ls')).code === 0, 30_000, 'the stack serving again after nats-server restarted');
  }

  before(async () => {
    stack = await startStack();
    client = new grpc.Client(`unix:${stack.sock}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 * MiB,
      'grpc.max_send_message_length': 16 * MiB,
    });
    const w = await write(big, 'faults-big');
    assert.equal(w.code, 0, w.details);
    assert.equal(w.digest, bigDigest);
  });

  after(async () => {
    client?.close();
    await stack?.stop();
  });

  test('a 64 MiB Read drained at 1 MiB/s completes with the right digest', async () => {
    const r = await read(bigDigest, MiB);
    assert.equal(r.code, 0, r.details);
    assert.equal(r.n, big.length);
    assert.equal(r.digest, bigDigest);
  });

  test('a Read when nats-server dies: Unavailable within seconds, or every byte', async (t) => {
    let killedAt = 0;
    const r = await read(bigDigest, 16 * MiB, (n) => {
      if (!killedAt && n >= 8 * MiB) killedAt = killNats();
    });
    assert.ok(killedAt, `nats-server was killed during the read (the read ended first: ${r.code} ${r.details ?? ''} after ${r.n} bytes)`);
    assert.equal(r.gap, undefined, r.gap);
    t.diagnostic(r.code === 0 ? 'the read completed' : `${r.details} after ${r.n} bytes, ${r.at - killedAt} ms after the kill`);
    if (r.code === 0) {
      assert.equal(r.n, big.length);
      assert.equal(r.digest, bigDigest);
    } else {
      assert.equal(r.code, grpc.status.UNAVAILABLE, r.details);
      assert.ok(r.at - killedAt < 10_000, `failed ${r.at - killedAt} ms after the kill`);
    }
    await recovered();
    const again = await read(bigDigest, 1024 * MiB);
    assert.equal(again.code, 0, again.details);
    assert.equal(again.digest, bigDigest);
  });

  test('a Write when nats-server dies: Unavailable within seconds, or committed intact', async (t) => {
    const data = randomFillSync(Buffer.alloc(32 * MiB));
    let killedAt = 0;
    const w = await write(data, 'faults-write', (i) => {
      if (!killedAt && i === 8) killedAt = killNats();
    });
    const endedAt = Date.now();
    assert.ok(killedAt, 'nats-server was killed during the write');
    t.diagnostic(w.code === 0 ? 'the write completed' : `${w.details}, ${endedAt - killedAt} ms after the kill`);
    if (w.code === 0) assert.equal(w.digest, sha(data));
    else {
      assert.equal(w.code, grpc.status.UNAVAILABLE, w.details);
      assert.ok(endedAt - killedAt < 10_000, `failed ${endedAt - killedAt} ms after the kill`);
    }
    await recovered();
    // whatever the broken write left behind, the blob can be written and read back whole
    const again = await write(data, 'faults-write');
    assert.equal(again.code, 0, again.details);
    assert.equal(again.digest, sha(data));
    const r = await read(sha(data), 1024 * MiB);
    assert.equal(r.digest, sha(data));
  });

  test('ctr events when nats-server dies: exits with Unavailable within seconds', async (t) => {
    const p = spawn('ctr', ['--address', stack.sock, 'events'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (b) => (stderr += b));
    const exited = new Promise<{ code: number | null; at: number }>((resolve) => p.once('exit', (code) => resolve({ code, at: Date.now() })));
    try {
      await sleep(1500); // ctr subscribed
      assert.equal(p.exitCode, null, `ctr events exited early: ${stderr}`);
      const killedAt = killNats();
      const r = await Promise.race([exited, sleep(15_000).then(() => undefined)]);
      assert.ok(r, 'ctr events still running 15 s after nats-server died');
      t.diagnostic(`${stderr.trim()}, ${r.at - killedAt} ms after the kill`);
      assert.notEqual(r.code, 0);
      assert.match(stderr, /Unavailable|code = 14/);
      assert.ok(r.at - killedAt < 10_000, `ctr events ended ${r.at - killedAt} ms after the kill`);
    } finally {
      p.kill('SIGKILL');
    }
    await recovered();
  });
});
