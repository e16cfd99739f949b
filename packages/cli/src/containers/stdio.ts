// A terminal's (or pipe's) stdio joined to a container process through FIFOs, as ctr's cio does:
// the shim opens the other ends. Our opens never block: a FIFO opened O_RDWR is its own reader
// and writer. The output FIFOs are read through a second, read-only fd, and the O_RDWR one is
// closed once the shim holds its writer (after Create/Exec), so the copy ends at the process's EOF.
import { randomBytes } from 'node:crypto';
import { closeSync, constants as C, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { S_IF, mknod } from '@berth/native';

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export class Fifos {
  readonly paths: StdioPaths;
  private readonly held: number[] = [];
  private readonly readers: Array<{ sock: net.Socket; done: Promise<void> }> = [];
  private input: net.Socket | null = null;
  private log: number | null = null;

  constructor(
    private readonly dir: string,
    id: string,
    o: { stdin: boolean; terminal: boolean },
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fifo = (name: string) => {
      const p = join(dir, `${id}-${name}`);
      mknod(p, S_IF.FIFO | 0o600, 0);
      this.held.push(openSync(p, C.O_RDWR | C.O_NONBLOCK));
      return p;
    };
    this.paths = {
      stdin: o.stdin ? fifo('stdin') : '',
      stdout: fifo('stdout'),
      // a terminal has one output
      stderr: o.terminal ? '' : fifo('stderr'),
      terminal: o.terminal,
    };
  }

  /** A fresh folder under `base` for one process's FIFOs. */
  static dirUnder(base: string): string {
    return join(base, randomBytes(8).toString('hex'));
  }

  /**
   * Copies the process's output to ours (and to the `log` file when given): in place before it
   * starts, so nothing is missed.
   */
  attachOutput(out: NodeJS.WritableStream, err: NodeJS.WritableStream, log?: string): void {
    if (log) {
      mkdirSync(dirname(log), { recursive: true });
      // written as it comes (page cache: microseconds), so nothing is pending when we exit
      this.log = openSync(log, C.O_WRONLY | C.O_APPEND | C.O_CREAT, 0o644);
    }
    const read = (path: string, to: NodeJS.WritableStream) => {
      const sock = new net.Socket({ fd: openSync(path, C.O_RDONLY | C.O_NONBLOCK), readable: true, writable: false });
      const done = new Promise<void>((resolve) => {
        sock.on('data', (b) => {
          to.write(b);
          if (this.log !== null) writeSync(this.log, b);
        });
        sock.on('end', () => resolve());
        sock.on('close', () => resolve());
        sock.on('error', () => resolve());
      });
      this.readers.push({ sock, done });
    };
    read(this.paths.stdout, out);
    if (this.paths.stderr) read(this.paths.stderr, err);
  }

  /**
   * Copies `input` to the process once it has started (a shim opens an exec's stdin at its
   * start, and CloseIO before then would be lost); `onInputEnd` runs once our stdin reached EOF
   * and its FIFO is closed (send CloseIO then).
   */
  attachInput(input: NodeJS.ReadableStream, onInputEnd: () => void): void {
    if (!this.paths.stdin) return;
    this.input = new net.Socket({ fd: openSync(this.paths.stdin, C.O_RDWR | C.O_NONBLOCK), readable: false, writable: true });
    this.input.on('error', () => {});
    const sock = this.input;
    input.pipe(sock, { end: false });
    input.once('end', () => sock.end(() => onInputEnd()));
  }

  /**
   * The process started, so the shim holds its ends (an exec's are opened at its start): let go
   * of ours, and the output reaches EOF when the process is done with it.
   */
  releaseHeld(): void {
    for (const fd of this.held.splice(0)) closeSync(fd);
  }

  /** Waits (at most `ms`) for the output to reach EOF: the process and its shim let go of it. */
  async drained(ms: number): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.readers.map((r) => r.done)), new Promise((r) => (t = setTimeout(r, ms)))]);
    clearTimeout(t);
  }

  close(): void {
    if (this.log !== null) closeSync(this.log);
    this.log = null;
    this.releaseHeld();
    for (const r of this.readers) r.sock.destroy();
    this.input?.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
