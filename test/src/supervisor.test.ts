// The supervisor's children die with it, however it dies, and `berth up` ends what an earlier run
// on the same root left running before it starts (else: the old nats-server on the port, services
// dying on RocksDB's LOCK).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { defaultConfig } from '@berth/kit';
import { ctr, repo, run, sleep, startStack, type Stack } from './harness.js';

/** Gone, or exited and only waiting for init to reap it. */
function gone(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}

function children(stack: Stack): Map<string, number> {
  const dir = join(stack.state, 'pids');
  const pids = new Map<string, number>();
  for (const f of readdirSync(dir)) if (f !== 'berth.pid') pids.set(f.replace(/\.pid$/, ''), Number(readFileSync(join(dir, f), 'utf8')));
  return pids;
}

describe('supervisor', () => {
  let stack: Stack | undefined;
  let dir: string | undefined;
  after(async () => {
    await stack?.stop();
  });

  test('kill -9 of berth up: every child gone within 2 s; the next berth up on the same root starts and serves', async (t) => {
    stack = await startStack({ node: 'sup-node' });
    dir = stack.dir;
    assert.equal((await ctr(stack.sock, 'namespaces', 'create', 'before-kill', 'k=v')).code, 0);
    const pids = children(stack);
    assert.deepEqual([...pids.keys()].sort(), [...defaultConfig().services, 'nats-server'].sort());
    stack.proc.kill('SIGKILL');
    const t0 = Date.now();
    while ([...pids.values()].some((p) => !gone(p)) && Date.now() - t0 < 5000) await sleep(20);
    const took = Date.now() - t0;
    const left = [...pids].filter(([, p]) => !gone(p)).map(([n, p]) => `${n} (${p})`);
    assert.deepEqual(left, [], `still running ${took} ms after kill -9`);
    assert.ok(took <= 2000, `children gone after ${took} ms`);
    t.diagnostic(`every child gone ${took} ms after kill -9`);
    await stack.stop(true);

    stack = await startStack({ node: 'sup-node', dir });
    const ls = await ctr(stack.sock, 'namespaces', 'ls');
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /before-kill\s+k=v/);
  });

  test('berth up ends the nats-server and services an earlier run left, then starts cleanly', async () => {
    assert.ok(stack && dir);
    // what a run without PR_SET_PDEATHSIG left: its nats-server and a service holding the LOCK,
    // started again by hand, detached, as orphans of nobody we know
    const root = stack.root;
    const conf = join(root, 'nats', 'nats-server.conf');
    await stack.stop(true);
    stack = undefined;
    const port = Number(/listen: "[^:]+:(\d+)"/.exec(readFileSync(conf, 'utf8'))![1]);
    const natsd = spawn('nats-server', ['-c', conf], { detached: true, stdio: 'ignore' });
    natsd.unref();
    const config = { root, state: join(dir!, 'state'), node: 'sup-node', nats: { port, credentials_dir: join(root, 'nats', 'creds') } };
    const ns = spawn(process.execPath, [join(repo, 'services/namespaces/dist/main.js'), '--berth-root', root], {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, BERTH_CONFIG_JSON: JSON.stringify(config) },
    });
    ns.unref();
    // the service is up once it holds its store's LOCK
    for (let i = 0; i < 100 && !lockHeld(ns.pid!, join(root, 'namespaces')); i++) await sleep(50);
    assert.ok(lockHeld(ns.pid!, join(root, 'namespaces')), 'the leftover namespaces service holds its LOCK');

    stack = await startStack({ node: 'sup-node', dir });
    assert.match(stack.output(), /ending what an earlier run left: .*nats-server \(pid \d+\)/);
    assert.match(stack.output(), /namespaces \(pid \d+\)/);
    assert.ok(gone(natsd.pid!) && gone(ns.pid!));
    const ls = await ctr(stack.sock, 'namespaces', 'ls');
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /before-kill/);
    assert.doesNotMatch(stack.output(), /restarting/);
  });

  test('a second berth up on a root whose stack runs is refused, and the running one goes on', async () => {
    assert.ok(stack && dir);
    const r = await run(process.execPath, [join(repo, 'packages/cli/dist/main.js'), 'up', '--root', stack.root, '--state', join(dir!, 'state2'), '--nats-port', '0', '--node', 'sup-node']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /another berth up \(pid \d+\) is running on root/);
    assert.equal((await ctr(stack.sock, 'namespaces', 'ls')).code, 0);
    assert.ok(existsSync(stack.sock));
  });
});

/** Whether `pid` has RocksDB's LOCK file of a store under `dir` open. */
function lockHeld(pid: number, dir: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        const t = readlinkSync(`/proc/${pid}/fd/${fd}`);
        return t.startsWith(dir) && t.endsWith('/LOCK');
      } catch {
        return false; // closed meanwhile
      }
    });
  } catch {
    return false;
  }
}
