// NATS is no second, open door beside the socket: as an unprivileged local user (uid 65534), a
// connection without credentials is refused, and the read-only subscriber credential reads events
// (core subjects, a JetStream consumer) but publishes none, calls no service, cannot touch the
// stream nor read another's inbox. Beyond loopback, NATS speaks TLS; the socket gets [grpc] uid/gid.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { token } from '@berth/bus';
import { ctr, natsWith, repo, run, startStack, type Stack } from './harness.js';

const nobody = 65534;

describe('NATS for an unprivileged local user', () => {
  let stack: Stack;
  let dir: string;
  before(async () => {
    stack = await startStack({ node: 'sec.node' });
    dir = mkdtempSync(join(tmpdir(), 'berth-sec-'));
    // an event in the history before the subscriber comes
    assert.equal((await ctr(stack.sock, 'namespaces', 'create', 'sec-before')).code, 0);
  });
  after(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('credential files are 0600 in a 0700 folder', () => {
    const file = stack.credentials('subscriber');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(join(file, '..')).mode & 0o777, 0o700);
    for (const s of ['gateway', 'events', 'namespaces', 'content']) assert.equal(statSync(stack.credentials(s)).mode & 0o777, 0o600);
  });

  test('no credentials: refused; subscriber: reads events, publishes nothing, calls no service', async () => {
    // the operator hands the subscriber credential to the consumer's user
    chownSync(dir, nobody, nobody);
    const cred = join(dir, 'subscriber.json');
    copyFileSync(stack.credentials('subscriber'), cred);
    chownSync(cred, nobody, nobody);
    chmodSync(cred, 0o600);
    const probe = join(repo, 'test/dist/fixtures/subscriber-probe.js');
    const p = spawn('setpriv', ['--reuid', String(nobody), '--regid', String(nobody), '--clear-groups', process.execPath, probe, stack.natsUrl, cred, token('sec.node')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: dir,
    });
    let out = '';
    let err = '';
    p.stderr.on('data', (b) => (err += b));
    const subscribed = new Promise<void>((resolve) =>
      p.stdout.on('data', (b) => {
        out += b;
        if (out.includes('"subscribed"')) resolve();
      }),
    );
    const exited = new Promise<number | null>((r) => p.once('exit', r));
    await Promise.race([subscribed, exited]);
    assert.equal((await ctr(stack.sock, 'namespaces', 'create', 'sec-live')).code, 0);
    assert.equal(await exited, 0, `probe: ${err}${out}`);
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, string | string[]>;
    assert.equal(r.uid, nobody);
    assert.match(r.anonymous as string, /^refused: .*Authorization Violation/i);
    // reads: live on core NATS (protobuf and JSON) and the history through JetStream
    assert.deepEqual(r.core, ['berth.events.default.namespaces.create']);
    assert.deepEqual(r.json, ['/namespaces/create']);
    assert.equal(r.history, 'berth.events.default.namespaces.create');
    // and nothing else
    for (const what of ['publishEvent', 'callService', 'deleteStream', 'readOtherInbox', 'serveAsService']) {
      assert.match(r[what] as string, /^refused: .*Permissions Violation/i, `${what}: ${r[what]}`);
    }
    assert.ok((r.violations as string[]).some((v) => /Publish to "berth\.json\.events\./.test(v)), `the forged JSON event was refused: ${r.violations}`);
    // what it tried left no trace: no namespace, the stream and its history are there
    assert.doesNotMatch((await ctr(stack.sock, 'namespaces', 'ls', '-q')).stdout, /forged/);
    const h = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', '1', 'topic=="/namespaces/create"']);
    assert.equal(h.code, 0, h.stderr);
    assert.match(h.stdout, /sec-before[\s\S]*sec-live/);
  });

  test('the gateway credential cannot publish events nor manage the stream', async () => {
    const nc = await natsWith(stack.natsUrl, stack.credentials('gateway'));
    const errors: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'error') errors.push(String((s as { error: unknown }).error));
    })();
    await assert.rejects(nc.request('$JS.API.STREAM.DELETE.BERTH_EVENTS', '', { timeout: 2000 }), /Permissions Violation/);
    await assert.rejects(nc.request('berth.events.default.namespaces.create', new Uint8Array([1]), { timeout: 2000 }), /Permissions Violation/);
    await nc.close();
  });
});

/** A CA and a server certificate for 127.0.0.1, made with openssl. */
async function certificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const f = (n: string) => join(dir, n);
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const args of [
    ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=berth test CA'],
    ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost'],
    ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('san.ext')],
  ]) {
    const r = await run('openssl', args);
    assert.equal(r.code, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
  }
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

describe('NATS beyond loopback', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'berth-tls-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('[nats] host beyond loopback without certificates: berth up refuses, saying why', async () => {
    const conf = join(dir, 'plain.toml');
    writeFileSync(conf, '[nats]\nhost = "0.0.0.0"\n');
    const r = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'up', '--config', conf, '--root', join(dir, 'r0'), '--state', join(dir, 's0'), '--nats-port', '0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /beyond loopback.*tls_cert and tls_key/);
  });

  test('TLS from the config: services connect, ctr works; the socket gets [grpc] uid/gid', async () => {
    const c = await certificates(dir);
    const conf = join(dir, 'tls.toml');
    writeFileSync(conf, `[grpc]\nuid = ${nobody}\ngid = ${nobody}\n[nats]\nhost = "0.0.0.0"\ntls_ca = "${c.ca}"\ntls_cert = "${c.cert}"\ntls_key = "${c.key}"\n`);
    const stack = await startStack({ config: conf, node: 'tls-node' });
    try {
      const r = await ctr(stack.sock, 'namespaces', 'create', 'over-tls');
      assert.equal(r.code, 0, r.stderr);
      assert.match((await ctr(stack.sock, 'namespaces', 'ls', '-q')).stdout, /over-tls/);
      const st = statSync(stack.sock);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [nobody, nobody, 0o660]);
      // the server speaks TLS only: a client that cannot check its certificate gets nowhere
      await assert.rejects(natsWith(stack.natsUrl, stack.credentials('subscriber'), { reconnect: false, timeout: 3000 }));
      const nc = await natsWith(stack.natsUrl, stack.credentials('subscriber'), { tls: { caFile: c.ca } });
      assert.equal(nc.info?.tls_required, true);
      await nc.close();
    } finally {
      await stack.stop();
    }
  });
});
