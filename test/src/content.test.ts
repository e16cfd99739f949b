// The content store end to end: the real `ctr content` commands against the stack and against
// the reference containerd on the same inputs, which must agree; the namespace emptiness check
// that content makes reachable; a blob fetched from the local registry.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { codec } from '@berth/api';
import { ctr, referenceLikeGc, run, shared, startReference, startStack, until, type Reference, type Run, type Stack } from './harness.js';
import { metadata, writeBlob } from './grpc.js';

const registry = process.env.REGISTRY ?? '127.0.0.1:5000';

describe('content', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  let registryUp = false;
  const ns = `it-content-${process.pid}`;
  const blob = randomBytes(3 << 20); // 3 MiB: several chunks each way
  const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex');
  const confDir = mkdtempSync('/tmp/berth-content-conf-');

  before(async () => {
    const reg = run(join(shared, 'testenv', 'registry.sh'), ['start'], { timeout: 300_000 });
    // content ingested without a lease lives until the next collection; this file's tests run
    // side by side, so another test's removal must not collect a blob this one still compares
    [stack, ref] = await Promise.all([startStack({ config: referenceLikeGc(confDir, { afterDeletions: false }) }), startReference()]);
    registryUp = (await reg).code === 0;
  });
  after(async () => {
    await ref?.stop();
    await stack?.stop();
    rmSync(confDir, { recursive: true, force: true });
  });

  /** The same ctr command against both; exit codes and outputs must agree. */
  async function both(args: string[], input?: string | Buffer, compare: (r: Run) => string = (r) => r.stdout): Promise<Run> {
    const call = (sock: string) => (input === undefined ? ctr(sock, '-n', ns, ...args) : runInput(sock, args, input));
    const ours = await call(stack.sock);
    if (ref) {
      const theirs = await call(ref.sock);
      assert.equal(ours.code, theirs.code, `exit code of ctr ${args.join(' ')}: ours ${ours.code} (${ours.stderr.trim()}), reference ${theirs.code} (${theirs.stderr.trim()})`);
      assert.equal(compare(ours), compare(theirs), `output of ctr ${args.join(' ')}`);
      if (ours.code !== 0) assert.equal(ours.stderr.trim(), theirs.stderr.trim(), `error of ctr ${args.join(' ')}`);
    }
    return ours;
  }

  function runInput(sock: string, args: string[], input: string | Buffer): Promise<Run> {
    return new Promise((resolve) => {
      import('node:child_process').then(({ spawn }) => {
        const t0 = Date.now();
        const p = spawn('ctr', ['--address', sock, '-n', ns, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (b) => (stdout += b));
        p.stderr.on('data', (b) => (stderr += b));
        p.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr, ms: Date.now() - t0 }));
        p.stdin.on('error', () => undefined); // ctr may stop reading early (e.g. the content exists): its exit code tells
        p.stdin.end(input);
      });
    });
  }

  // ctr prints labels in Go's map order, which is random: compare them sorted
  const sortLabels = (s: string) => s.split(',').sort().join(',');
  const rows = (r: Run) =>
    r.stdout
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => {
        const w = l.split(/\s+/).filter(Boolean);
        return [w[0], w[1], sortLabels(w.at(-1)!)].join(' '); // digest, size, labels (not the AGE words)
      })
      .sort()
      .join('\n');

  /**
   * The reference collects unreferenced content (what ctr ingests holds no lease) in a garbage
   * collection that any deletion schedules. A synchronous lease delete waits for the pending
   * one, so none falls inside the checks that follow (as ../shared/compat does it).
   */
  async function gcSettle(): Promise<void> {
    for (const sock of [stack.sock, ...(ref ? [ref.sock] : [])]) {
      assert.equal((await ctr(sock, '-n', ns, 'leases', 'create', '--id', 'gc-settle')).code, 0);
      assert.equal((await ctr(sock, '-n', ns, 'leases', 'rm', '--sync', 'gc-settle')).code, 0);
    }
  }

  test('ingest, ls, get, label, active, rm: as the reference does', async () => {
    await gcSettle();
    await both(['content', 'ingest', '--expected-size', String(blob.length), '--expected-digest', digest, 'ref-1'], blob);
    const ls = await both(['content', 'ls', '-q'], undefined, (r) => r.stdout.split('\n').filter((l) => l === digest).join());
    assert.ok(ls.stdout.includes(digest));
    const got = await run('sh', ['-c', `ctr --address ${stack.sock} -n ${ns} content get ${digest} | sha256sum`]);
    assert.equal(got.stdout.split(' ')[0], digest.slice(7));
    await both(['content', 'label', digest, 'a=b', 'c=d'], undefined, (r) => sortLabels(r.stdout.trim()));
    await both(['content', 'label', digest, 'c=']);
    await both(['content', 'ls'], undefined, (r) => rows(r).split('\n').filter((l) => l.startsWith(digest)).join());
    // the same bytes again: already exists, nothing to do
    await both(['content', 'ingest', 'ref-2'], blob);
    await both(['content', 'get', 'sha256:' + '0'.repeat(64)]);
    await both(['content', 'active']);
    await both(['content', 'rm', digest], undefined, () => ''); // exit codes must agree; what rm prints depends on whether a collection came first
    await both(['content', 'ls', '-q'], undefined, (r) => String(r.stdout.includes(digest)));
  });

  /**
   * One Read stream: its status and, when it succeeded, how many bytes came, their digest and
   * whether every message's offset counted from the start of the read.
   */
  function readOutcome(sock: string, req: Record<string, unknown>, namespace: string | undefined): Promise<string> {
    const RReq = codec('containerd.services.content.v1.ReadContentRequest');
    const RRes = codec('containerd.services.content.v1.ReadContentResponse');
    const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 16 << 20 });
    const id = (b: Buffer) => b;
    return new Promise<string>((resolve) => {
      const call = c.makeServerStreamRequest('/containerd.services.content.v1.Content/Read', id, id, Buffer.from(RReq.encode(req)), metadata(namespace));
      const h = createHash('sha256');
      let n = 0;
      let ordered = true;
      call.on('data', (b: Buffer) => {
        const r = RRes.decode(b);
        if (Number(r.offset ?? 0) !== n) ordered = false;
        h.update(r.data);
        n += r.data.length;
      });
      call.on('error', (e: grpc.ServiceError) => resolve(`${e.code} ${e.details}`));
      call.on('end', () => resolve(`ok ${n} bytes sha256:${h.digest('hex')}${ordered ? '' : ' offsets out of order'}`));
    }).finally(() => c.close());
  }

  test('Read ranges and errors: as the reference answers them', async (t) => {
    if (!ref) return t.skip('no reference containerd');
    const data = randomBytes((2 << 20) + 12_345);
    const dg = 'sha256:' + createHash('sha256').update(data).digest('hex');
    const rns = `${ns}-read`;
    // held by a lease: a collection (another test's removal schedules one) takes unleased content
    for (const sock of [stack.sock, ref.sock]) {
      assert.equal((await ctr(sock, '-n', rns, 'leases', 'create', '--id', 'read-ranges')).code, 0);
      assert.equal(await writeBlob(sock, metadata(rns, 'read-ranges'), 'read-ranges', data, dg), 'ok');
    }
    const cases: [Record<string, unknown>, string | undefined][] = [
      [{ digest: dg }, rns],
      [{ digest: dg, offset: 100 }, rns],
      [{ digest: dg, offset: 1_500_000, size: (1 << 20) + 3 }, rns],
      [{ digest: dg, offset: 10, size: 32 << 10 }, rns],
      [{ digest: dg, offset: data.length - 5, size: 100 }, rns],
      [{ digest: dg, offset: data.length }, rns],
      [{ digest: dg, offset: data.length + 1 }, rns],
      [{ digest: 'sha256:' + '0'.repeat(64) }, rns],
      [{ digest: 'sha256:nothex' }, rns],
      [{ digest: dg }, `${ns}-other`],
      [{ digest: dg }, undefined],
    ];
    for (const [req, namespace] of cases) {
      const ours: string = await readOutcome(stack.sock, req, namespace);
      const theirs: string = await readOutcome(ref.sock, req, namespace);
      assert.equal(ours, theirs, `Read ${JSON.stringify(req)} in ${namespace ?? 'no namespace'}`);
    }
    for (const sock of [stack.sock, ref.sock]) {
      await ctr(sock, '-n', rns, 'leases', 'rm', 'read-ranges');
      await ctr(sock, '-n', rns, 'content', 'rm', dg);
    }
  });

  test('a namespace holding blobs cannot be removed, with containerd message', async () => {
    const small = Buffer.from(`hello ${ns}\n`);
    await gcSettle();
    await both(['content', 'ingest', 'ref-small'], small);
    const [ours, theirs] = await Promise.all([ctr(stack.sock, 'namespaces', 'rm', ns), ref ? ctr(ref.sock, 'namespaces', 'rm', ns) : undefined]);
    assert.notEqual(ours.code, 0);
    assert.match(ours.stderr, new RegExp(`namespace "${ns}" must be empty, but it still has blobs: failed precondition`));
    if (theirs) {
      assert.equal(ours.code, theirs.code);
      assert.equal(ours.stderr.split('\n').filter((l) => l.startsWith('ctr:')).join(), theirs.stderr.split('\n').filter((l) => l.startsWith('ctr:')).join());
    }
    const dg = 'sha256:' + createHash('sha256').update(small).digest('hex');
    await both(['content', 'rm', dg]);
  });

  test('kill -9 of the content service during a write, then the write resumes at its offset', async () => {
    const data = randomBytes(8 << 20);
    const dg = 'sha256:' + createHash('sha256').update(data).digest('hex');
    const { spawn } = await import('node:child_process');
    const p = spawn('ctr', ['--address', stack.sock, '-n', ns, 'content', 'ingest', '--expected-size', String(data.length), '--expected-digest', dg, 'ref-crash'], { stdio: ['pipe', 'ignore', 'pipe'] });
    const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    p.stdin.on('error', () => undefined);
    p.stdin.write(data.subarray(0, 4 << 20));
    const offset = async () => Number(/ref-crash\s+(\d+)/.exec((await ctr(stack.sock, '-n', ns, 'content', 'active')).stdout)?.[1] ?? 0);
    await until(async () => (await offset()) > 0, 10_000, 'ingest under way');
    process.kill(stack.pid('content'), 'SIGKILL');
    p.stdin.destroy();
    assert.notEqual(await exited, 0, 'the interrupted ctr ingest fails');
    // restarted by the supervisor: the ingest is still there, with what was written
    await until(async () => (await offset()) > 0, 10_000, 'content back with the ingest');
    // ctr resumes by seeking its input to the offset the store reports: give it a file
    const file = join(stack.dir, 'crash.bin');
    writeFileSync(file, data);
    const resumed = await run('sh', ['-c', `ctr --address ${stack.sock} -n ${ns} content ingest --expected-size ${data.length} --expected-digest ${dg} ref-crash < ${file}`]);
    assert.equal(resumed.code, 0, resumed.stderr);
    const got = await run('sh', ['-c', `ctr --address ${stack.sock} -n ${ns} content get ${dg} | sha256sum`]);
    assert.equal(got.stdout.split(' ')[0], dg.slice(7));
    assert.doesNotMatch((await ctr(stack.sock, '-n', ns, 'content', 'active')).stdout, /ref-crash/);
    assert.equal((await ctr(stack.sock, '-n', ns, 'content', 'rm', dg)).code, 0);
  });

  test('writes under a lease: refused for a missing lease, listed as the lease\'s resources', async () => {
    const grpc = await import('@grpc/grpc-js');
    const { codec } = await import('@berth/api');
    const W = codec('containerd.services.content.v1.WriteContentRequest');
    const LR = codec('containerd.services.leases.v1.ListResourcesRequest');
    const LRes = codec('containerd.services.leases.v1.ListResourcesResponse');
    const data = Buffer.from(`leased ${ns}\n`);
    const dg = 'sha256:' + createHash('sha256').update(data).digest('hex');
    const id = (b: Buffer) => b;
    const write = (sock: string, lease: string) =>
      new Promise<string>((resolve) => {
        const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
        const md = new grpc.Metadata();
        md.set('containerd-namespace', ns);
        md.set('containerd-lease', lease);
        const call = c.makeBidiStreamRequest('/containerd.services.content.v1.Content/Write', id, id, md);
        call.on('data', () => undefined);
        call.on('error', (e: { code: number; details: string }) => resolve(`${e.code} ${e.details}`));
        call.on('end', () => resolve('ok'));
        call.write(Buffer.from(W.encode({ action: 'COMMIT', ref: `leased-${lease}`, total: data.length, expected: dg, offset: 0, data })));
        call.end();
      });
    const resources = (sock: string, lease: string) =>
      new Promise<string[]>((resolve, reject) => {
        const c = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure());
        const md = new grpc.Metadata();
        md.set('containerd-namespace', ns);
        c.makeUnaryRequest('/containerd.services.leases.v1.Leases/ListResources', id, id, Buffer.from(LR.encode({ id: lease })), md, (e, r) =>
          e ? reject(e) : resolve(LRes.decode(r!).resources.map((x: { id: string; type: string }) => `${x.type} ${x.id}`).sort()),
        );
      });
    for (const sock of [stack.sock, ...(ref ? [ref.sock] : [])]) {
      assert.equal(await write(sock, 'no-such-lease'), `5 lease does not exist: not found`, sock);
      assert.equal((await ctr(sock, '-n', ns, 'leases', 'create', '--id', 'held')).code, 0);
      assert.equal(await write(sock, 'held'), 'ok', sock);
      assert.deepEqual(await resources(sock, 'held'), [`content ${dg}`], sock);
      assert.equal((await ctr(sock, '-n', ns, 'leases', 'rm', 'held')).code, 0);
      await ctr(sock, '-n', ns, 'content', 'rm', dg);
    }
  });

  test('fetch from the local registry: the same blobs as the reference', async (t) => {
    if (!registryUp) return t.skip('local registry (../shared/testenv/registry.sh) not available');
    const image = `${registry}/library/layered:latest`;
    await both(['content', 'fetch', '--plain-http', image], undefined, () => '');
    const digests = (r: Run) => r.stdout.split('\n').filter((l) => l.startsWith('sha256:')).sort().join('\n');
    const ls = await both(['content', 'ls', '-q'], undefined, digests);
    assert.ok(digests(ls).split('\n').length >= 6, ls.stdout);
    await both(['content', 'prune', 'references'], undefined, () => '');
  });
});
