// A process's stdin as the shim copies it from the client's FIFO: CloseIO right after the
// client's last write (what `berth run -i` and ctr do) still delivers that write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, constants as C, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { BerthError, Code } from '@berth/errdefs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Reaper, S_IF, mknod } from '@berth/native';
import { makePipe, ProcessIO } from './stdio.js';

test('CloseIO after the last write: the FIFO still holds it, and the process gets it before EOF', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-stdio-'));
  try {
    const fifo = join(dir, 'in');
    mknod(fifo, S_IF.FIFO | 0o600, 0);
    const client = openSync(fifo, C.O_RDWR | C.O_NONBLOCK);
    const io = await ProcessIO.open({ stdin: fifo, stdout: '', stderr: '', terminal: false }, { id: 'c', namespace: 'ns', tmp: join(dir, 'tmp'), reaper: new Reaper(() => {}) });
    const processEnd = io.runcStdio[0] as number;
    writeSync(client, 'last words\n');
    closeSync(client);
    // in the same tick: the shim has not read the FIFO yet
    io.closeStdin();
    const got = await new Promise<string>((resolve) => {
      let s = '';
      const r = new net.Socket({ fd: processEnd, readable: true, writable: false });
      r.on('data', (b) => (s += b));
      r.on('end', () => resolve(s));
    });
    assert.equal(got, 'last words\n');
    // no io.close(): the process's end was ours to read, and the socket closed it
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a terminal with a file:// log: what the pty master gives is appended to the file; another scheme is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-stdio-'));
  try {
    const log = join(dir, 'logs', 'c.log');
    const opts = { id: 'c', namespace: 'ns', tmp: join(dir, 'tmp'), reaper: new Reaper(() => {}) };
    const io = await ProcessIO.open({ stdin: '', stdout: `file://${log}`, stderr: '', terminal: true }, opts);
    // a pipe stands in for the pty master: its writer plays the container's terminal
    const { r, w } = makePipe(dir);
    const copy = io.attachConsole(r);
    writeSync(w, 'hello from a tty\r\n');
    closeSync(w);
    await copy.done;
    io.close();
    assert.equal(readFileSync(log, 'utf8'), 'hello from a tty\r\n');
    await assert.rejects(ProcessIO.open({ stdin: '', stdout: 'binary:///bin/logger', stderr: '', terminal: true }, opts), (e: BerthError) => e.code === Code.InvalidArgument && /binary:\/\/ is not supported/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

