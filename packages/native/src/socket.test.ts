import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Watch, accept, getWinsize, recvmsg, sendmsg, setWinsize, socketpair, unixListen } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-socket-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function openPtmx(): number {
  return openSync('/dev/ptmx', constants.O_RDWR | constants.O_NOCTTY);
}

describe('fd passing and terminals', { timeout: 20_000 }, () => {
  test('recvmsg receives the bytes and the fds sent with SCM_RIGHTS', () => {
    const [a, b] = socketpair();
    const ptmx = openPtmx();
    try {
      assert.equal(recvmsg(a), null, 'nothing waiting yet is null, not a block');
      sendmsg(b, 'console', [ptmx]);
      const got = recvmsg(a)!;
      assert.equal(got.data.toString(), 'console');
      assert.equal(got.fds.length, 1);
      assert.equal(got.truncated, false);
      const [received] = got.fds;
      assert.notEqual(received, ptmx, 'a new descriptor');
      assert.equal(fstatSync(received).rdev, fstatSync(ptmx).rdev, 'for the same pty');
      // The received master is the same terminal: a size set through it reads back on the original.
      setWinsize(received, 40, 132);
      assert.deepEqual(getWinsize(ptmx), { rows: 40, cols: 132 });
      closeSync(received);
    } finally {
      closeSync(ptmx);
      closeSync(a);
      closeSync(b);
    }
  });

  test('more fds than room: the rest are closed and it says so', () => {
    const open = () => readdirSync('/proc/self/fd').length;
    const before = open();
    const [a, b] = socketpair();
    const fds = [openPtmx(), openPtmx(), openPtmx()];
    try {
      sendmsg(b, Buffer.from('x'), fds);
      const got = recvmsg(a, 16, 1)!;
      assert.equal(got.fds.length, 1);
      assert.equal(got.truncated, true);
      closeSync(got.fds[0]);
    } finally {
      for (const fd of [...fds, a, b]) closeSync(fd);
    }
    assert.equal(open(), before, 'no received fd is left open');
  });

  test('a console socket: listen, watch, accept the connection, read what the peer sent', async () => {
    const path = join(dir, 'console.sock');
    const server = unixListen(path);
    try {
      const accepted = new Promise<number>((resolve) => {
        const w = new Watch(server, () => {
          const fd = accept(server);
          if (fd === null) return; // spurious wake-up
          w.stop();
          resolve(fd);
        });
      });
      const client = connect(path);
      client.end('hello from runc');
      const conn = await accepted;
      const data: Buffer[] = [];
      await new Promise<void>((resolve) => {
        const w = new Watch(conn, () => {
          const got = recvmsg(conn);
          if (got === null) return;
          if (got.data.length === 0) {
            w.stop();
            return resolve();
          }
          data.push(got.data);
        });
      });
      closeSync(conn);
      assert.equal(Buffer.concat(data).toString(), 'hello from runc');
      assert.equal(accept(server), null, 'no further connection');
    } finally {
      closeSync(server);
    }
  });

  // runc itself on the other end: `runc create --console-socket` sends the pty master (with its
  // name as data); the size set on it is what the container's `stty size` reads.
  const runc = ['/usr/sbin/runc', '/usr/bin/runc'].find((p) => existsSync(p));
  const mergedUsr = (() => {
    try {
      return readlinkSync('/bin') === 'usr/bin';
    } catch {
      return false;
    }
  })();
  test('runc --console-socket: receive the master, resize it, the container sees the size', { skip: !(runc && mergedUsr) && 'needs runc and a merged-/usr host' }, async () => {
    const bundle = join(dir, 'bundle');
    mkdirSync(join(bundle, 'rootfs', 'usr'), { recursive: true });
    for (const l of ['bin', 'lib', 'lib64']) symlinkSync(`usr/${l}`, join(bundle, 'rootfs', l));
    execFileSync(runc!, ['spec', '--bundle', bundle]);
    const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
    spec.root = { path: 'rootfs', readonly: true };
    spec.process.terminal = true;
    spec.process.args = ['sh', '-c', 'stty size; sleep 1'];
    spec.mounts.push({ destination: '/usr', type: 'bind', source: '/usr', options: ['rbind', 'ro'] });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    const sock = join(dir, 'runc-console.sock');
    const server = unixListen(sock);
    const id = `berth-native-test-${process.pid}`;
    let master = -1;
    try {
      execFileSync(runc!, ['create', '--bundle', bundle, '--console-socket', sock, id], { stdio: ['ignore', 'ignore', 'pipe'] });
      const conn = accept(server);
      assert.notEqual(conn, null, 'runc connected during create');
      const got = recvmsg(conn!)!;
      closeSync(conn!);
      assert.equal(got.fds.length, 1);
      master = got.fds[0];
      assert.equal(got.data.toString(), '/dev/ptmx');
      setWinsize(master, 33, 77);
      execFileSync(runc!, ['start', id]);
      // The master is a blocking fd: read it only when the loop says it is readable.
      const out = await new Promise<string>((resolve, reject) => {
        let text = '';
        const buf = Buffer.alloc(256);
        const w = new Watch(master, () => {
          try {
            text += buf.subarray(0, readSync(master, buf)).toString();
          } catch (e) {
            w.stop();
            return reject(e);
          }
          if (text.includes('\n')) {
            w.stop();
            resolve(text);
          }
        });
      });
      assert.equal(out.trim(), '33 77');
    } finally {
      if (master >= 0) closeSync(master);
      closeSync(server);
      spawnSync(runc!, ['delete', '--force', id]);
    }
  });

  test('errors carry the syscall', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      assert.throws(() => setWinsize(fd, 1, 1), { code: 'ENOTTY', syscall: 'ioctl' });
      assert.throws(() => recvmsg(fd), { code: 'ENOTSOCK', syscall: 'recvmsg' });
    } finally {
      closeSync(fd);
    }
    assert.throws(() => unixListen(join(dir, 'x'.repeat(200))), { code: 'ENAMETOOLONG' });
  });
});
