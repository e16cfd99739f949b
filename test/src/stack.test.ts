// The foundation end to end: `berth up` in temp dirs, the real ctr against it, and the same
// ctr commands against the reference containerd, which must agree.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultConfig } from '@berth/kit';
import { ctr, natsWith, repo, run, startReference, startStack, until, type Reference, type Run, type Stack } from './harness.js';
import { outcome, unary } from './grpc.js';

describe('local stack', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  let uuid = '';

  // every service but diff: a stack may run a subset, and the methods of what it leaves out must
  // answer at once
  const confDir = mkdtempSync('/tmp/berth-stack-conf-');
  const config = join(confDir, 'config.toml');
  writeFileSync(config, `services = ${JSON.stringify(defaultConfig().services.filter((s) => s !== 'diff'))}\n`);

  before(async () => {
    [stack, ref] = await Promise.all([startStack({ config }), startReference()]);
  });
  after(async () => {
    rmSync(confDir, { recursive: true, force: true });
    await ref?.stop();
    if (stack) assert.equal(await stack.stop(), 0, 'berth up exits 0 on SIGTERM');
  });

  test('ctr version and plugins ls', async () => {
    const v = await ctr(stack.sock, 'version');
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /Server:\s+Version:\s+1\.6\.20\+berth/);
    assert.match(v.stdout, /UUID: [0-9a-f-]{36}/);
    uuid = /UUID: (\S+)/.exec(v.stdout)![1]!;
    const p = await ctr(stack.sock, 'plugins', 'ls');
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /io\.containerd\.grpc\.v1\s+namespaces\s+-\s+ok/);
    assert.match(p.stdout, /io\.containerd\.grpc\.v1\s+introspection/);
    const ids = p.stdout.trim().split('\n').slice(1).map((l) => l.split(/\s+/).slice(0, 2).join(' '));
    assert.equal(new Set(ids).size, ids.length, `a plugin listed twice:\n${p.stdout}`);
    const f = await ctr(stack.sock, 'plugins', 'ls', 'id==namespaces');
    assert.equal(f.stdout.trim().split('\n').length, 2, f.stdout);
  });

  test('grpc.health.v1 answers SERVING', async () => {
    const grpc = await import('@grpc/grpc-js');
    const { service } = await import('grpc-health-check');
    const Client = grpc.makeGenericClientConstructor(service as never, 'Health');
    const c = new Client(`unix:${stack.sock}`, grpc.credentials.createInsecure()) as unknown as { check(req: object, cb: (e: Error | null, r: { status: string }) => void): void; close(): void };
    const r = await new Promise<{ status: string }>((res, rej) => c.check({ service: '' }, (e, x) => (e ? rej(e) : res(x))));
    c.close();
    assert.equal(r.status, 'SERVING');
  });

  test('a method of a service that does not run answers Unavailable at once', async () => {
    const t0 = Date.now();
    const r = await outcome(unary(stack.sock, '/containerd.services.diff.v1.Diff/Apply', {}));
    assert.match(r, /^14 .*diff.*not running|^14 /);
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  });

  test('a second stack on the same socket refuses, and the first keeps serving', async () => {
    const { spawn } = await import('node:child_process');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const dir = mkdtempSync('/tmp/berth-it2-');
    const p = spawn(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'up', '--root', join(dir, 'root'), '--state', join(dir, 'state'), '--address', stack.sock, '--nats-port', '0', '--node', 'second'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b) => (out += b));
    p.stderr.on('data', (b) => (out += b));
    const code = await new Promise<number | null>((r) => p.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
    assert.notEqual(code, 0);
    // whichever socket of the first stack it trips on first: the gRPC one (gateway) or the shims' ttrpc one (tasks)
    assert.match(out, /(gateway exited before it was ready[\s\S]*another server is listening there|tasks exited before it was ready[\s\S]*TtrpcServer\.listen)/);
    assert.equal((await ctr(stack.sock, 'version')).code, 0);
  });

  test('the socket is mode 0660', async () => {
    const { statSync } = await import('node:fs');
    assert.equal(statSync(stack.sock).mode & 0o777, 0o660);
  });

  test('namespaces: ctr behaves as against the reference containerd', async (t) => {
    if (!ref) return t.skip('../shared/testenv not found: no reference to compare with');
    const steps: string[][] = [
      ['namespaces', 'create', 'it-a', 'a=b'],
      ['namespaces', 'create', 'it-a'],
      ['namespaces', 'create', 'Bad_Name!'],
      ['namespaces', 'create', 'it.dotted.name', 'k=v'],
      ['namespaces', 'label', 'it-a', 'c=d'],
      ['namespaces', 'label', 'it-a', 'a='],
      ['namespaces', 'ls'],
      ['namespaces', 'ls', '-q'],
      ['namespaces', 'rm', 'it-missing'],
      ['namespaces', 'rm', 'it-a', 'it.dotted.name'],
      ['namespaces', 'ls', '-q'],
    ];
    for (const s of steps) {
      const [ours, theirs]: Run[] = await Promise.all([ctr(stack.sock, ...s), ctr(ref!.sock, ...s)]);
      const norm = (x: string) => x.split(stack.sock).join('SOCK').split(ref!.sock).join('SOCK');
      assert.equal(ours.code, theirs.code, `exit code of ctr ${s.join(' ')}: ours ${ours.code} (${ours.stderr}), reference ${theirs.code} (${theirs.stderr})`);
      assert.equal(norm(ours.stderr), norm(theirs.stderr), `stderr of ctr ${s.join(' ')}`);
      // `ls` lists the reference's own `default` namespace too; compare ours without it
      const lines = (x: string) => x.split('\n').filter((l) => l && !/^default\b/.test(l));
      assert.deepEqual(lines(ours.stdout), lines(theirs.stdout), `stdout of ctr ${s.join(' ')}`);
    }
  });

  test('the services are listed on $SRV.INFO', async () => {
    // $SRV.INFO is a call: the gateway's credential may make it, the subscriber's may not
    const nc = await natsWith(stack.natsUrl, stack.credentials('gateway'));
    try {
      const names = new Set<string>();
      for await (const m of await nc.requestMany('$SRV.INFO', '', { strategy: 'stall', stall: 200, maxWait: 2000 })) {
        const info = m.json<{ name: string; metadata: { node: string } }>();
        if (info.metadata?.node === 'it-node') names.add(info.name);
      }
      for (const s of ['namespaces', 'gateway', 'events', 'content', 'leases', 'images']) assert.ok(names.has(`berth-${s}`), `${s} in ${[...names].join(',')}`);
    } finally {
      await nc.close();
    }
  });

  // a call each service must answer again once it is back; a List in a namespace of its own each
  // time, so the gateway's read cache (services/gateway/README.md) cannot answer it for the service
  let probeN = 0;
  const fresh = () => `probe-${probeN++}`;
  const probes: Record<string, () => Promise<Run>> = {
    namespaces: () => ctr(stack.sock, '-n', fresh(), 'namespaces', 'ls'),
    gateway: () => ctr(stack.sock, 'namespaces', 'ls'),
    content: () => ctr(stack.sock, '-n', 'probe', 'content', 'ls'),
    leases: () => ctr(stack.sock, '-n', 'probe', 'leases', 'ls'),
    images: () => ctr(stack.sock, '-n', fresh(), 'images', 'ls'),
    events: () => run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', '999999999']),
  };
  for (const [service, probe] of Object.entries(probes)) {
    test(`kill -9 ${service}: fails fast meanwhile, restarted and serving within 5 s`, async () => {
      const before = stack.pid(service);
      process.kill(before, 'SIGKILL');
      const during = await probe();
      if (during.code !== 0) {
        assert.ok(during.ms < 4000, `a call during the outage took ${during.ms} ms`);
        if (service !== 'gateway') assert.match(during.stderr, /Unavailable|unavailable|not running/);
      }
      const took = await until(async () => (await probe()).code === 0, 5000, `${service} back`);
      assert.notEqual(stack.pid(service), before);
      assert.ok(took <= 5000);
      if (service === 'gateway') {
        // the server UUID survives the restart
        assert.equal(/UUID: (\S+)/.exec((await ctr(stack.sock, 'version')).stdout)?.[1], uuid);
      }
    });
  }

  test('kill -9 of nats-server: restarted, every service reconnects, nothing lost', async () => {
    assert.equal((await ctr(stack.sock, 'namespaces', 'create', 'survives-nats', 'k=v')).code, 0);
    process.kill(stack.pid('nats-server'), 'SIGKILL');
    const during = await ctr(stack.sock, 'namespaces', 'ls');
    if (during.code !== 0) assert.ok(during.ms < 4000, `a call during the outage took ${during.ms} ms`);
    const took = await until(async () => (await ctr(stack.sock, 'namespaces', 'ls')).code === 0, 10_000, 'stack back after nats-server restart');
    assert.ok(took <= 10_000);
    const ls = await ctr(stack.sock, 'namespaces', 'ls');
    assert.match(ls.stdout, /survives-nats\s+k=v/);
    // the event history is on disk with JetStream: still there (an event still in the service's
    // outbox when nats-server died follows once it is back)
    const history = () => run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', '1', 'topic=="/namespaces/create"']);
    await until(async () => /survives-nats/.test((await history()).stdout), 10_000, 'the event in the history');
    assert.equal((await ctr(stack.sock, 'namespaces', 'rm', 'survives-nats')).code, 0);
  });

  test('SIGTERM to the whole process group (a Ctrl-C) stops every process it started, none restarted', async () => {
    const pids = [...Object.keys(probes), 'nats-server'].map((s) => stack.pid(s));
    // like a terminal's Ctrl-C: every process of the group gets the signal at once
    const seen = stack.output().length;
    for (const p of [stack.proc.pid!, ...pids]) process.kill(p, 'SIGINT');
    const code = await stack.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(stack.output().slice(seen), /restarting/);
    for (const p of pids) assert.ok(!existsSync(`/proc/${p}`) || /zombie|Z \(/.test(''), `process ${p} still running`);
    stack = undefined as unknown as Stack;
  });
});
