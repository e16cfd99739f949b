// Hostile input through the socket (issue 13): random, mutated and well-formed-but-hostile
// requests to every method of every containerd service the gateway serves, with and without
// (hostile) namespaces. No answer may be Unknown or Internal, no handler may hang, no service
// may crash. Bounded and seeded: FUZZ_SEED and FUZZ_COUNT (inputs per method) replay a run.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { codec, services, type MethodInfo } from '@berth/api';
import { ctr, startStack, type Stack } from './harness.js';
import { Generator, modes, seedFor, type Input } from './fuzz.js';

const seed = Number(process.env.FUZZ_SEED ?? 1313);
const count = Number(process.env.FUZZ_COUNT ?? 30);
const deadlineMs = 5000;
// a stream that has neither answered nor failed by then is open and waiting (Subscribe,
// Replay --follow, a Write waiting for data): healthy, so it is cancelled
const streamIdleMs = 300;
const parallel = 6;

// What the gateway serves: containerd's gRPC services and Berth's own (not the shim's Task API
// nor the ttrpc events service, which containerd serves to shims, not on its socket).
// Not berth.images.v1.Transfer: it talks to the registry a request names (`fuzz` is Docker Hub's),
// and a test sends nothing off this machine; test/src/pull.test.ts covers its bad input.
const served = services.filter(
  (s) => (/^containerd\.services\.[a-z]+\.v1\./.test(s.fullName) || s.fullName.startsWith('berth.')) && s.fullName !== 'berth.images.v1.Transfer',
);

interface Case {
  m: MethodInfo;
  index: number;
  namespace: string | undefined;
  input: Input;
}

interface Outcome {
  code: number | 'open' | 'answered';
  details: string;
}

function cases(): Case[] {
  const out: Case[] = [];
  for (const svc of served) {
    for (const m of svc.methods) {
      const gen = new Generator(seedFor(seed, m.path));
      for (let index = 0; index < count; index++) {
        const mode = modes[index % modes.length]!;
        const namespace = gen.namespace(mode);
        out.push({ m, index, namespace, input: gen.input(m.requestType, mode) });
      }
    }
  }
  return out;
}

const identity = (b: Buffer) => b;

function call(client: grpc.Client, c: Case): Promise<Outcome> {
  const md = new grpc.Metadata();
  if (c.namespace !== undefined) md.set('containerd-namespace', c.namespace);
  const opts = { deadline: Date.now() + deadlineMs };
  const req = Buffer.from(c.input.bytes);
  const { m } = c;
  if (!m.requestStream && !m.responseStream) {
    return new Promise((resolve) =>
      client.makeUnaryRequest(m.path, identity, identity, req, md, opts, (err) =>
        resolve(err ? { code: err.code, details: err.details } : { code: 0, details: '' }),
      ),
    );
  }
  return new Promise((resolve) => {
    const stream = m.requestStream ? client.makeBidiStreamRequest(m.path, identity, identity, md, opts) : client.makeServerStreamRequest(m.path, identity, identity, req, md, opts);
    let outcome: Outcome | undefined;
    const settle = (o: Outcome) => {
      if (outcome) return;
      outcome = o;
      clearTimeout(idle);
      stream.cancel();
      resolve(o);
    };
    const idle = setTimeout(() => settle({ code: 'open', details: '' }), streamIdleMs);
    stream.on('data', () => settle({ code: 'answered', details: '' }));
    stream.on('error', (err: grpc.ServiceError) => settle({ code: err.code, details: err.details }));
    stream.on('status', (s: grpc.StatusObject) => settle({ code: s.code, details: s.details }));
    if (m.requestStream) {
      const w = stream as grpc.ClientDuplexStream<Buffer, Buffer>;
      w.write(req);
      w.end();
    }
  });
}

function failure(c: Case, o: Outcome): string | undefined {
  const unary = !c.m.requestStream && !c.m.responseStream;
  if (o.code === grpc.status.UNKNOWN || o.code === grpc.status.INTERNAL || (unary && o.code === grpc.status.DEADLINE_EXCEEDED)) {
    const hex = Buffer.from(c.input.bytes).toString('hex');
    return [
      `${c.m.path} answered ${grpc.status[o.code as number]} (${o.code}): ${o.details}`,
      `  replay: FUZZ_SEED=${seed} FUZZ_COUNT=${count} input #${c.index} (${c.input.mode}), namespace ${show(c.namespace)}`,
      `  input (${c.input.bytes.length} bytes): ${hex.length > 2048 ? hex.slice(0, 2048) + '…' : hex}`,
    ].join('\n');
  }
  return undefined;
}

const show = (ns: string | undefined) => (ns && ns.length > 40 ? `${JSON.stringify(ns.slice(0, 8))}… (${ns.length} characters)` : JSON.stringify(ns));

function pids(state: string): Map<string, number> {
  const dir = join(state, 'pids');
  return new Map(readdirSync(dir).map((f) => [f, Number(readFileSync(join(dir, f), 'utf8'))]));
}

function logTail(state: string, svc: string): string {
  try {
    return readFileSync(join(state, 'logs', `${svc}.log`), 'utf8').slice(-4000);
  } catch {
    return '(no log)';
  }
}

describe('fuzz: hostile requests through the socket', () => {
  let stack: Stack;
  let client: grpc.Client;
  before(async () => {
    stack = await startStack();
    client = new grpc.Client(`unix:${stack.sock}`, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  test('an image without a target is InvalidArgument, worded as containerd 1.6.20 words it', async () => {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', 'default');
    const req = Buffer.from(codec('containerd.services.images.v1.CreateImageRequest').encode({ image: { name: 'no-target' } }));
    const err = await new Promise<grpc.ServiceError | null>((r) => client.makeUnaryRequest('/containerd.services.images.v1.Images/Create', identity, identity, req, md, (e) => r(e)));
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, err?.details);
    // the reference's answer to the same request
    assert.equal(err?.details, 'Target.Digest "" invalid: invalid checksum digest format: invalid argument');
  });

  test(`every method, ${count} inputs each (FUZZ_SEED=${seed})`, { timeout: 120_000 }, async () => {
    console.log(`fuzz: FUZZ_SEED=${seed} FUZZ_COUNT=${count}`);
    const before = pids(stack.state);
    const all = cases();
    const failures: string[] = [];
    const codes = new Map<string, number>();
    let next = 0;
    const worker = async () => {
      while (next < all.length) {
        const c = all[next++]!;
        const o = await call(client, c);
        const name = typeof o.code === 'number' ? grpc.status[o.code] : o.code;
        codes.set(name!, (codes.get(name!) ?? 0) + 1);
        const f = failure(c, o);
        if (f) failures.push(f);
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: parallel }, worker));
    console.log(`fuzz: ${all.length} calls to ${new Set(all.map((c) => c.m.path)).size} methods in ${Date.now() - t0} ms: ${JSON.stringify(Object.fromEntries(codes))}`);
    for (const f of failures.slice(0, 30)) console.log(f);
    assert.equal(failures.length, 0, `${failures.length} answers were Unknown, Internal or a hang (the first 30 above)`);
    // nothing crashed: every process is the one that started, and the stack still answers
    const crashed = [...pids(stack.state)].filter(([f, pid]) => before.get(f) !== pid).map(([f]) => f.replace(/\.pid$/, ''));
    assert.deepEqual(crashed, [], crashed.map((svc) => `${svc} restarted; its log ends:\n${logTail(stack.state, svc)}`).join('\n'));
    const ls = await ctr(stack.sock, 'namespaces', 'ls');
    assert.equal(ls.code, 0, ls.stderr);
  });
});
