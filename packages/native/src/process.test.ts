import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, openSync, readSync, rmdirSync, writeFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  Reaper,
  Watch,
  eventfd,
  eventfdRead,
  eventfdWrite,
  isChildSubreaper,
  pipe,
  pidfdOpen,
  setChildSubreaper,
  waitidPeek,
  waitpid,
  type ExitInfo,
} from './index.js';

/** Spawns `sh -c script` and resolves with the first line it prints (a pid) . */
async function firstLine(child: ChildProcess): Promise<string> {
  let out = '';
  for await (const chunk of child.stdout!) {
    out += chunk;
    if (out.includes('\n')) break;
  }
  return out.split('\n')[0];
}

function exitOf(child: ChildProcess): Promise<[number | null, string | null]> {
  return once(child, 'exit') as Promise<[number | null, string | null]>;
}

describe('subreaper', { timeout: 20_000 }, () => {
  test('an orphan is reparented to us; the peek sees it and leaves it; waitpid reaps it', async () => {
    setChildSubreaper(true);
    assert.equal(isChildSubreaper(), true);
    // sh starts a grandchild and exits: the grandchild's parent becomes this process.
    const sh = spawn('sh', ['-c', 'sleep 0.2 & echo $!; exit 0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const orphan = Number(await firstLine(sh));
    assert.deepEqual(await exitOf(sh), [0, null], "child_process still sees its own child's exit");
    // Wait for the orphan's exit to show in the peek, without reaping anything.
    let seen: ExitInfo | null = null;
    for (let i = 0; i < 300 && seen?.pid !== orphan; i++) {
      await new Promise((r) => setTimeout(r, 5));
      seen = waitidPeek();
    }
    assert.deepEqual(seen, { pid: orphan, code: 0, signal: null });
    assert.deepEqual(waitidPeek(), seen, 'a peek reaps nothing');
    assert.deepEqual(waitpid(orphan), { pid: orphan, code: 0, signal: null });
    assert.equal(waitpid(orphan), null, 'reaped once');
  });

  test("the Reaper reaps orphans (exit codes, signals) and never steals a child_process child's exit", async () => {
    setChildSubreaper(true);
    const exits: ExitInfo[] = [];
    const reaper = new Reaper((e) => exits.push(e)).start();
    try {
      // Orphans that exit with a code and by a signal, at about the time two child_process
      // children exit (one with a code, one by a signal), so their zombies interleave.
      const parent = spawn('sh', ['-c', "(sleep 0.2; exit 3) & echo $!; sh -c 'sleep 0.2; kill -9 $$' & echo $!; exit 0"], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const [orphanCode, orphanKilled] = await new Promise<number[]>((resolve) => {
        let out = '';
        parent.stdout!.on('data', (c) => {
          out += c;
          const lines = out.split('\n').filter(Boolean);
          if (lines.length >= 2) resolve(lines.slice(0, 2).map(Number));
        });
      });
      const a = spawn('sh', ['-c', 'sleep 0.2; exit 7'], { stdio: 'ignore' });
      const b = spawn('sh', ['-c', 'sleep 0.2; kill -TERM $$'], { stdio: 'ignore' });
      const [pe, ae, be] = await Promise.all([exitOf(parent), exitOf(a), exitOf(b)]);
      assert.deepEqual(pe, [0, null]);
      assert.deepEqual(ae, [7, null]);
      assert.deepEqual(be, [null, 'SIGTERM']);
      for (let i = 0; i < 200 && exits.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
      const byPid = new Map(exits.map((e) => [e.pid, e]));
      assert.equal(exits.length, 2, JSON.stringify(exits));
      assert.deepEqual(byPid.get(orphanCode), { pid: orphanCode, code: 3, signal: null });
      assert.deepEqual(byPid.get(orphanKilled), { pid: orphanKilled, code: null, signal: 9 });
      for (const c of [parent, a, b]) assert.ok(!byPid.has(c.pid!), 'a child_process child was reaped by the Reaper');
    } finally {
      reaper.stop();
    }
  });

  test('a scan that runs before libuv has reaped a child_process zombie leaves it to libuv', async () => {
    // libuv's own SIGCHLD handler usually runs first; this makes the other order happen for sure.
    const exits: ExitInfo[] = [];
    const reaper = new Reaper((e) => exits.push(e)).start();
    try {
      const a = spawn('sh', ['-c', 'exit 7'], { stdio: 'ignore' });
      const deadline = Date.now() + 5000;
      while (waitidPeek()?.pid !== a.pid) assert.ok(Date.now() < deadline, 'the child never became a zombie');
      reaper.scan(); // synchronously: libuv has had no chance to reap it yet
      assert.equal(waitidPeek()?.pid, a.pid, 'the zombie is still there for libuv');
      assert.deepEqual(await exitOf(a), [7, null]);
      assert.deepEqual(exits, []);
    } finally {
      reaper.stop();
    }
  });

  test('a signal death reads as the signal', async () => {
    setChildSubreaper(true);
    const exits: ExitInfo[] = [];
    const reaper = new Reaper((e) => exits.push(e)).start();
    try {
      const sh = spawn('sh', ['-c', 'sleep 5 & echo $!; exit 0'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const orphan = Number(await firstLine(sh));
      await exitOf(sh);
      process.kill(orphan, 'SIGKILL');
      for (let i = 0; i < 200 && exits.length < 1; i++) await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(exits, [{ pid: orphan, code: null, signal: 9 }]);
    } finally {
      reaper.stop();
    }
  });
});

describe('Reaper.spawn', { timeout: 20_000 }, () => {
  /** What a non-blocking pipe's read end holds (the writer has exited). */
  function drain(fd: number): string {
    const buf = Buffer.alloc(65536);
    let out = '';
    for (;;) {
      let n = 0;
      try {
        n = readSync(fd, buf);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw e;
      }
      if (n === 0) break;
      out += buf.subarray(0, n).toString();
    }
    return out;
  }

  test('answers the exit of the process it started, which onExit never sees; stdio is the fds given', async () => {
    const exits: ExitInfo[] = [];
    const reaper = new Reaper((e) => exits.push(e)).start();
    const [r, w] = pipe();
    try {
      const done = reaper.spawn('sh', ['-c', 'echo out; echo err >&2; read x; echo "in:$x"; exit 3'], [-1, w, w]);
      closeSync(w);
      assert.deepEqual(await done, { pid: (await done).pid, code: 3, signal: null });
      assert.equal(drain(r), 'out\nerr\nin:\n', 'fd 0 is /dev/null, 1 and 2 the pipe');
      assert.deepEqual(exits, []);
    } finally {
      closeSync(r);
      reaper.stop();
    }
  });

  test('the child gets default signal dispositions and an empty mask (Node ignores SIGPIPE)', async () => {
    const reaper = new Reaper(() => undefined).start();
    const [r, w] = pipe();
    try {
      const done = reaper.spawn('cat', ['/proc/self/status'], [-1, w, -1]);
      closeSync(w);
      assert.equal((await done).code, 0);
      const status = drain(r);
      assert.match(status, /^SigIgn:\s+0+$/m);
      assert.match(status, /^SigBlk:\s+0+$/m);
    } finally {
      closeSync(r);
      reaper.stop();
    }
  });

  test('a program not on PATH is an ENOENT, no process', () => {
    const reaper = new Reaper(() => undefined).start();
    try {
      assert.throws(() => reaper.spawn('berth-no-such-program', []), { code: 'ENOENT', syscall: 'spawn' });
    } finally {
      reaper.stop();
    }
  });
});

describe('watches on the main loop', { timeout: 20_000 }, () => {
  test('a pidfd watch fires when the process exits', async () => {
    const child = spawn('sleep', ['0.1'], { stdio: 'ignore' });
    const fd = pidfdOpen(child.pid!);
    const started = process.hrtime.bigint();
    let fired = 0n;
    await new Promise<void>((resolve, reject) => {
      const w = new Watch(fd, (err) => {
        w.stop();
        if (err) return reject(err);
        fired = process.hrtime.bigint();
        resolve();
      });
    });
    closeSync(fd);
    assert.ok(fired - started >= 50_000_000n, 'fired only once the process had exited');
    await exitOf(child);
  });

  test('a pidfd of a missing process is ESRCH', () => {
    assert.throws(() => pidfdOpen(2 ** 22 + 1), { code: /ESRCH|EINVAL/, syscall: 'pidfd_open' });
  });

  test('an eventfd watch fires on write and reads the count', async () => {
    const fd = eventfd();
    assert.equal(eventfdRead(fd), null, 'nothing yet');
    const counts: bigint[] = [];
    const done = new Promise<void>((resolve) => {
      const w = new Watch(fd, () => {
        counts.push(eventfdRead(fd)!);
        if (counts.length === 1) setImmediate(() => eventfdWrite(fd, 2n)); // fires again once read
        else {
          w.stop();
          resolve();
        }
      });
    });
    eventfdWrite(fd, 3);
    await done;
    closeSync(fd);
    assert.deepEqual(counts, [3n, 2n]);
  });

  const memcg = '/sys/fs/cgroup/memory';
  test('cgroup v1: an eventfd registered on memory.oom_control fires on an OOM kill', { skip: !existsSync(`${memcg}/cgroup.event_control`) && 'no cgroup v1 memory controller' }, async () => {
    const cg = `${memcg}/berth-native-test-${process.pid}`;
    mkdirSync(cg);
    const efd = eventfd();
    const ofd = openSync(`${cg}/memory.oom_control`, 'r');
    try {
      writeFileSync(`${cg}/memory.limit_in_bytes`, String(64 << 20));
      writeFileSync(`${cg}/cgroup.event_control`, `${efd} ${ofd}`);
      const oom = new Promise<bigint>((resolve) => {
        const w = new Watch(efd, () => {
          const n = eventfdRead(efd);
          if (n === null) return;
          w.stop();
          resolve(n);
        });
      });
      // Joins the cgroup, then touches 256 MiB in a 64 MiB limit.
      const hog = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec ${process.execPath} -e "Buffer.alloc(256 << 20, 1)"`], { stdio: 'ignore' });
      const [count, [code, signal]] = await Promise.all([oom, exitOf(hog)]);
      assert.ok(count >= 1n);
      assert.deepEqual([code, signal], [null, 'SIGKILL']);
    } finally {
      closeSync(ofd);
      closeSync(efd);
      for (let i = 0; i < 50; i++) {
        try {
          rmdirSync(cg);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 20)); // the killed process leaves the cgroup a moment later
        }
      }
    }
  });

  test('an unref()d watch does not keep the process alive; an exception reaches uncaughtException', async () => {
    const script = `
      import { Watch, eventfd, eventfdWrite } from ${JSON.stringify(new URL('./index.js', import.meta.url).href)};
      new Watch(eventfd(), () => {}).unref();
      const fd = eventfd();
      process.on('uncaughtException', (e) => { console.log('caught', e.message); process.exit(0); });
      new Watch(fd, () => { throw new Error('boom'); });
      eventfdWrite(fd, 1);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await firstLine(child);
    assert.deepEqual(await exitOf(child), [0, null]);
    assert.equal(line, 'caught boom');
    const idle = spawn(process.execPath, ['--input-type=module', '-e', script.split('\n').slice(0, 3).join('\n')], { stdio: 'ignore' });
    assert.deepEqual(await exitOf(idle), [0, null], 'exits although a watch exists');
  });
});
