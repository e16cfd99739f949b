// Events end to end: the real `ctr events` against the stack and the reference for the same
// actions; a plain NATS subscriber (no Berth code) sees the same events, also as JSON.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ctr, natsWith, repo, run, sleep, startReference, startStack, until, type Reference, type Stack } from './harness.js';

/** Runs `ctr events` while `act` runs; returns the topics it printed. */
async function ctrEvents(sock: string, act: () => Promise<void>): Promise<string[]> {
  const p = spawn('ctr', ['--address', sock, 'events'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (b) => (out += b));
  await sleep(1000); // ctr connects and subscribes: events before that are not its to see
  await act();
  await sleep(500);
  p.kill('SIGTERM');
  await new Promise((r) => p.once('exit', r));
  // ctr events prints: TIMESTAMP NAMESPACE TOPIC EVENT
  return out.split('\n').filter(Boolean).map((l) => l.split(' ').find((w) => w.startsWith('/'))!).filter(Boolean);
}

/** `ctr events FILTER` in the background: what it printed so far, and a stop. */
function watchEvents(sock: string, filter: string): { out: () => string; stop: () => Promise<void> } {
  const p = spawn('ctr', ['--address', sock, 'events', filter], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (b) => (out += b));
  p.stderr.on('data', (b) => (out += b));
  const exited = new Promise((r) => p.once('exit', r));
  return {
    out: () => out,
    async stop() {
      p.kill('SIGTERM');
      await exited;
    },
  };
}

describe('events', () => {
  let stack: Stack;
  let ref: Reference | undefined;
  before(async () => {
    [stack, ref] = await Promise.all([startStack(), startReference()]);
  });
  after(async () => {
    await ref?.stop();
    await stack?.stop();
  });

  const actions = (sock: string) => async () => {
    for (const args of [['namespaces', 'create', 'ev-a', 'x=1'], ['namespaces', 'label', 'ev-a', 'y=2'], ['namespaces', 'rm', 'ev-a']]) {
      const r = await ctr(sock, ...args);
      assert.equal(r.code, 0, r.stderr);
    }
  };

  test('ctr events prints the same topics as against the reference', async (t) => {
    const ours = await ctrEvents(stack.sock, actions(stack.sock));
    assert.deepEqual(ours, ['/namespaces/create', '/namespaces/update', '/namespaces/delete']);
    if (!ref) return t.skip('no reference containerd (../shared/testenv missing)');
    const theirs = await ctrEvents(ref.sock, actions(ref.sock));
    assert.deepEqual(ours, theirs);
  });

  test('Subscribe is the gateway\'s own: with the events service stopped, ctr events still gets every event', async () => {
    // SIGSTOP rather than kill -9, which the supervisor answers with a restart within 100 ms: a
    // stopped events service keeps its NATS subscriptions, so a call the gateway forwarded there
    // would wait for it and never answer
    const pid = stack.pid('events');
    process.kill(pid, 'SIGSTOP');
    try {
      assert.deepEqual(await ctrEvents(stack.sock, actions(stack.sock)), ['/namespaces/create', '/namespaces/update', '/namespaces/delete']);
      const bad = await run('ctr', ['--address', stack.sock, 'events', 'topic=='], { timeout: 10_000 });
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /code = InvalidArgument desc = subscription error: failed parsing subscription filters/);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.equal(stack.pid('events'), pid, 'the events service was not restarted meanwhile');
  });

  test('berth events replays the history through the gateway, with sequence numbers', async () => {
    const r = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', '1', 'topic~="/namespaces/"']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const topics = lines.map((l) => l.split(' ')[3]);
    assert.deepEqual(topics.slice(0, 3), ['/namespaces/create', '/namespaces/update', '/namespaces/delete']);
    const seqs = lines.map((l) => Number(l.split(' ')[0]));
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    // resume after the first: exactly the rest
    const again = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', String(seqs[0]! + 1), 'topic~="/namespaces/"']);
    assert.deepEqual(again.stdout.trim().split('\n'), lines.slice(1));
    const json = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since-seq', '1', '--json', 'topic=="/namespaces/create"']);
    assert.equal(JSON.parse(json.stdout.split('\n')[0]!).event.name, 'ev-a');
  });

  test('berth events --follow goes on with new events after the history', async () => {
    const p = spawn(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'events', '--address', stack.sock, '--since', new Date().toISOString(), '--follow', 'namespace==follow-me'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b) => (out += b));
    await sleep(500);
    assert.equal((await ctr(stack.sock, 'namespaces', 'create', 'follow-me')).code, 0);
    assert.equal((await ctr(stack.sock, 'namespaces', 'rm', 'follow-me')).code, 0);
    for (let i = 0; i < 40 && !out.includes('/namespaces/delete'); i++) await sleep(50);
    p.kill('SIGTERM');
    assert.deepEqual(out.trim().split('\n').map((l) => l.split(' ')[3]), ['/namespaces/delete']);
  });

  test('a plain NATS subscriber (with the subscriber credential) gets them too, as protobuf and as JSON, each published with its event (the events service stopped meanwhile)', async () => {
    const nc = await natsWith(stack.natsUrl, stack.credentials('subscriber'));
    const subjects: string[] = [];
    const json: { topic: string; namespace: string; event: Record<string, unknown> }[] = [];
    nc.subscribe('berth.events.>', { callback: (_e, m) => void subjects.push(m.subject) });
    nc.subscribe('berth.json.events.>', { callback: (_e, m) => void json.push(m.json()) });
    await nc.flush();
    const pid = stack.pid('events');
    process.kill(pid, 'SIGSTOP');
    try {
      await actions(stack.sock)();
      await sleep(300);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await nc.close();
    assert.deepEqual(subjects, ['berth.events.default.namespaces.create', 'berth.events.default.namespaces.update', 'berth.events.ev-a.namespaces.delete']);
    assert.deepEqual(json.map((j) => j.topic), ['/namespaces/create', '/namespaces/update', '/namespaces/delete']);
    assert.equal(json[0]!.event['@type'], 'containerd.events.NamespaceCreate');
    assert.deepEqual(json[0]!.event.labels, { x: '1' });
  });

  test('a pathological regexp filter (issue 13) stalls nothing: both subscribers get their events', async (t) => {
    // `^(a+)+$` against 60 a's and a b: a backtracking engine takes about 2^60 steps and pins
    // the events service, so neither subscriber would ever print; RE2 decides it at once
    const scenario = async (sock: string) => {
      const evil = watchEvents(sock, 'event.labels.k~="^(a+)+$"');
      const plain = watchEvents(sock, 'topic=="/namespaces/create"');
      await sleep(1000); // both ctr subscribed
      try {
        for (const [ns, k] of [['re-hostile', 'a'.repeat(60) + 'b'], ['re-match', 'aaaa']]) {
          const r = await ctr(sock, 'namespaces', 'create', ns!, `k=${k}`);
          assert.equal(r.code, 0, r.stderr);
        }
        await until(async () => plain.out().includes('re-match') && evil.out().includes('re-match'), 10_000, `events for ${sock}: plain=${plain.out()} evil=${evil.out()}`);
        await sleep(300);
      } finally {
        await Promise.all([evil.stop(), plain.stop()]);
        for (const ns of ['re-hostile', 're-match']) await ctr(sock, 'namespaces', 'rm', ns);
      }
      const seen = (out: string) => ['re-hostile', 're-match'].filter((ns) => out.includes(ns));
      return { evil: seen(evil.out()), plain: seen(plain.out()) };
    };
    const pid = stack.pid('events');
    const ours = await scenario(stack.sock);
    assert.deepEqual(ours, { evil: ['re-match'], plain: ['re-hostile', 're-match'] });
    assert.equal(stack.pid('events'), pid, 'the events service did not restart');
    if (!ref) return t.skip('no reference containerd (../shared/testenv missing)');
    assert.deepEqual(await scenario(ref.sock), ours);
  });
});
