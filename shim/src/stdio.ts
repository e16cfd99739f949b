// A process's stdio. Without a terminal the container gets the client's output FIFOs (or the log
// file) itself, as runc's pass-through fds: no byte of output goes through this process, so a
// chatty container costs the host nothing; stdin alone is copied (for its EOF and CloseIO).
// Opens never block (DESIGN): a FIFO opened O_RDWR has a reader and a writer at once, and from
// then on O_RDONLY/O_WRONLY opens of it return at once too. With a terminal, the pty master runc
// sends to the console socket is copied both ways here.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants as C, createWriteStream, mkdirSync, openSync, readSync, statSync, unlinkSync, writeSync } from 'node:fs';
import net from 'node:net';
import type { Writable } from 'node:stream';
import { dirname, join } from 'node:path';
import { Watch, S_IF, mknod, setWinsize, type Reaper } from '@berth/native';
import { BerthError, Code, invalidArgument } from '@berth/errdefs';

export interface Stdio {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

const isFifo = (p: string) => {
  try {
    return (statSync(p).mode & C.S_IFMT) === C.S_IFIFO;
  } catch {
    return false;
  }
};

/**
 * A pipe made of a private FIFO: both ends blocking (the process that gets one sees an ordinary
 * pipe), and the open never waits because the O_RDWR fd is a reader and a writer meanwhile.
 */
export function makePipe(dir: string): { r: number; w: number } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `p-${randomBytes(6).toString('hex')}`);
  mknod(path, S_IF.FIFO | 0o600, 0);
  const keep = openSync(path, C.O_RDWR);
  try {
    const r = openSync(path, C.O_RDONLY);
    const w = openSync(path, C.O_WRONLY);
    return { r, w };
  } finally {
    closeSync(keep);
    unlinkSync(path);
  }
}

/** What runc hands the container, and what this process keeps of it. */
export class ProcessIO {
  /** fds for runc's 0, 1, 2 (pass-through), closed here once runc has started the process */
  readonly runcStdio: [number | 'ignore', number | 'ignore', number | 'ignore'] = ['ignore', 'ignore', 'ignore'];
  /** the client's stdin FIFO copied into the container's stdin pipe */
  private stdinCopy: { src: net.Socket; dst: net.Socket; path: string } | null = null;
  private handedOver: number[] = [];
  private logger: { kill(): void } | null = null;
  private console: ConsoleCopy | null = null;
  private consoleIn: net.Socket | null = null;
  private consoleOut: Writable | null = null;

  private constructor(readonly stdio: Stdio) {}

  /** Opens what the client gave: FIFOs, `file://` or `binary://` log URIs, or nothing. */
  static async open(stdio: Stdio, o: { id: string; namespace: string; tmp: string; reaper: Reaper }): Promise<ProcessIO> {
    const io = new ProcessIO(stdio);
    try {
      if (stdio.terminal) io.openForConsole();
      else await io.openPassThrough(o);
    } catch (e) {
      io.close();
      throw e;
    }
    return io;
  }

  private openPassThrough(o: { id: string; namespace: string; tmp: string; reaper: Reaper }): Promise<void> | void {
    const { stdin, stdout, stderr } = this.stdio;
    if (stdin) {
      // Copied, so the container sees EOF when the client's writer closes (as with containerd's
      // shim; `echo x | ctr run` sends no CloseIO) and at CloseIO, whichever comes first.
      const pipe = makePipe(o.tmp);
      this.runcStdio[0] = this.hand(pipe.r);
      const dst = new net.Socket({ fd: pipe.w, readable: false, writable: true });
      dst.on('error', () => {}); // EPIPE: the container is gone
      const src = openInput(stdin);
      src.pipe(dst);
      this.stdinCopy = { src, dst, path: stdin };
    }
    const uri = parseUri(stdout);
    if (uri?.protocol === 'file:') {
      mkdirSync(dirname(uri.pathname), { recursive: true });
      const fd = this.hand(openSync(uri.pathname, C.O_WRONLY | C.O_APPEND | C.O_CREAT, 0o644));
      this.runcStdio[1] = fd;
      this.runcStdio[2] = fd;
      return;
    }
    if (uri?.protocol === 'binary:') return this.startLogger(uri, o);
    if (uri && uri.protocol !== 'fifo:') throw invalidArgument(`unknown STDIO scheme ${uri.protocol.slice(0, -1)}`);
    if (stdout) this.runcStdio[1] = this.hand(openOutput(stdout));
    if (stderr) this.runcStdio[2] = stderr === stdout ? this.runcStdio[1] : this.hand(openOutput(stderr));
  }

  private hand(fd: number): number {
    this.handedOver.push(fd);
    return fd;
  }

  /**
   * containerd's binary logger: the binary (URI path, query as args) reads the container's stdout
   * on fd 3 and stderr on fd 4, and closes fd 5 once it is ready.
   */
  private async startLogger(uri: URL, o: { id: string; namespace: string; tmp: string; reaper: Reaper }): Promise<void> {
    const out = makePipe(o.tmp);
    const err = makePipe(o.tmp);
    const ready = makePipe(o.tmp);
    const args: string[] = [];
    for (const [k, v] of uri.searchParams) args.push(k, v);
    const child = spawn(uri.pathname, args, {
      stdio: ['ignore', 'ignore', 'ignore', out.r, err.r, ready.w],
      env: { ...process.env, CONTAINER_ID: o.id, CONTAINER_NAMESPACE: o.namespace },
      detached: true,
    });
    o.reaper.track(child);
    child.unref();
    this.logger = child;
    for (const fd of [out.r, err.r, ready.w]) closeSync(fd);
    this.runcStdio[1] = this.hand(out.w);
    this.runcStdio[2] = this.hand(err.w);
    const signal = new net.Socket({ fd: ready.r, readable: true, writable: false });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        signal.destroy();
        reject(new BerthError(Code.DeadlineExceeded, `binary logger ${uri.pathname}: not ready after 10s`));
      }, 10_000);
      signal.on('data', () => {});
      signal.on('error', () => {});
      signal.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      child.once('error', (e) => {
        clearTimeout(t);
        signal.destroy();
        reject(new BerthError(Code.Unknown, `binary logger ${uri.pathname}: ${e.message}`));
      });
    });
  }

  private openForConsole(): void {
    const { stdin, stdout } = this.stdio;
    if (stdin) this.consoleIn = openInput(stdin);
    // a `file://` log takes a terminal's output too (containerd's shim has FIFOs and binary://
    // only for a terminal): how `berth run -d -t` keeps a detached terminal's output
    const uri = parseUri(stdout);
    if (uri?.protocol === 'file:') {
      mkdirSync(dirname(uri.pathname), { recursive: true });
      this.consoleOut = createWriteStream(uri.pathname, { flags: 'a', mode: 0o644 });
    } else if (uri && uri.protocol !== 'fifo:') throw invalidArgument(`a terminal's output to ${uri.protocol.slice(0, -1)}:// is not supported`);
    else if (stdout) this.consoleOut = new net.Socket({ fd: openSync(uri?.pathname ?? stdout, C.O_RDWR | C.O_NONBLOCK), readable: false, writable: true });
    this.consoleIn?.on('error', () => {});
    this.consoleOut?.on('error', () => {});
  }

  /** runc has the process: its copies of the fds are the container's now. */
  afterStart(): void {
    for (const fd of new Set(this.handedOver)) closeQuietly(fd);
    this.handedOver = [];
  }

  /** The pty master runc sent: copy it to stdout and stdin to it. */
  attachConsole(master: number): ConsoleCopy {
    this.console = new ConsoleCopy(master, this.consoleIn, this.consoleOut);
    return this.console;
  }

  get pty(): ConsoleCopy | null {
    return this.console;
  }

  /** CloseIO: the container's stdin reaches EOF (once the client's writer has closed too). */
  closeStdin(): void {
    if (this.stdinCopy) {
      const { src, dst, path } = this.stdinCopy;
      src.unpipe(dst);
      // A client sends CloseIO after its last write (ctr, berth run -i): what the FIFO still holds
      // is the end of the process's input, not to be dropped.
      for (let chunk: Buffer | null; (chunk = src.read() as Buffer | null) !== null; ) dst.write(chunk);
      drainFifo(path, (b) => dst.write(b));
      src.destroy();
      dst.end();
      this.stdinCopy = null;
    }
    this.consoleIn?.destroy();
    this.consoleIn = null;
  }

  /** Waits (bounded) until the terminal's output is copied: the process has exited. */
  async drain(timeoutMs = 2000): Promise<void> {
    if (this.console) await Promise.race([this.console.done, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  close(): void {
    this.afterStart();
    this.closeStdin();
    this.console?.close();
    this.consoleOut?.destroy();
    this.consoleOut = null;
  }

  /** An IO whose process failed to start: the binary logger goes too (otherwise it ends at EOF). */
  kill(): void {
    this.logger?.kill();
    this.close();
  }
}

function parseUri(s: string): URL | null {
  if (!s || s.startsWith('/')) return null;
  try {
    return new URL(s);
  } catch {
    return null;
  }
}

/**
 * The client's stdin FIFO, read non-blocking. Before the client's writer has opened it, epoll
 * reports nothing for it (Linux signals a hang-up only once a writer has come and gone), so the
 * read does not end early; after the writer closes, the copy ends.
 */
/** Reads what a FIFO holds now, without waiting for more. */
function drainFifo(path: string, each: (b: Buffer) => void): void {
  let fd: number;
  try {
    fd = openSync(path, C.O_RDONLY | C.O_NONBLOCK);
  } catch {
    return;
  }
  try {
    const buf = Buffer.allocUnsafe(1 << 16);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) return;
      each(Buffer.from(buf.subarray(0, n)));
    }
  } catch {
    // EAGAIN: nothing more for now
  } finally {
    closeSync(fd);
  }
}

function openInput(path: string): net.Socket {
  const s = new net.Socket({ fd: openSync(path, C.O_RDONLY | C.O_NONBLOCK), readable: true, writable: false });
  s.on('error', () => {});
  return s;
}

/**
 * A FIFO (or plain file) for the container to write to. O_RDWR on a FIFO: the open cannot wait
 * for a reader, and the container never gets SIGPIPE while the client is away (containerd's shim
 * holds a reader for the same reason).
 */
function openOutput(path: string): number {
  if (isFifo(path)) return openSync(path, C.O_RDWR);
  return openSync(path, C.O_WRONLY | C.O_APPEND);
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}

/**
 * Copies a pty master both ways without blocking the loop: Node cannot wrap a pty master as a
 * stream that does not block on write (libuv falls back to blocking writes for it), so the
 * master is polled with a native watch and read and written non-blocking.
 */
export class ConsoleCopy {
  private watch: Watch | null;
  private readonly buf = Buffer.allocUnsafe(32 * 1024);
  private pendingIn: Buffer[] = [];
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  private resolveDone!: () => void;
  /** resolves when the slave side is gone and everything read has been handed to stdout */
  readonly done = new Promise<void>((r) => (this.resolveDone = r));

  constructor(
    readonly master: number,
    private readonly input: net.Socket | null,
    private readonly output: Writable | null,
  ) {
    this.watch = new Watch(master, (err) => this.onReadable(err));
    this.watch.unref();
    input?.on('data', (chunk: Buffer) => this.write(chunk));
  }

  private onReadable(err: Error | null): void {
    if (err) return this.finish();
    for (;;) {
      let n: number;
      try {
        n = readSync(this.master, this.buf, 0, this.buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') return;
        return this.finish(); // EIO: every slave fd is closed, the process is gone
      }
      if (n === 0) return this.finish();
      const copy = Buffer.from(this.buf.subarray(0, n));
      if (this.output && !this.output.write(copy)) {
        // back-pressure: stop reading the master until the client has read
        this.watch?.stop();
        this.watch = null;
        this.output.once('drain', () => {
          if (!this.closed) this.watch = new Watch(this.master, (e) => this.onReadable(e)).unref();
        });
        return;
      }
    }
  }

  private write(chunk: Buffer): void {
    this.pendingIn.push(chunk);
    this.flushIn();
  }

  private flushIn(): void {
    while (this.pendingIn.length && !this.closed) {
      const head = this.pendingIn[0]!;
      let n: number;
      try {
        n = writeSync(this.master, head);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') {
          this.pendingIn = [];
          return;
        }
        n = 0;
      }
      if (n < head.length) {
        this.pendingIn[0] = head.subarray(n);
        this.input?.pause();
        this.retry ??= setTimeout(() => {
          this.retry = null;
          this.flushIn();
        }, 10);
        return;
      }
      this.pendingIn.shift();
    }
    this.input?.resume();
  }

  resize(rows: number, cols: number): void {
    if (!this.closed) setWinsize(this.master, rows, cols);
  }

  private finish(): void {
    if (this.closed) return;
    this.shut();
    if (this.output) this.output.end(() => this.resolveDone());
    else this.resolveDone();
  }

  private shut(): void {
    this.closed = true;
    this.watch?.stop();
    this.watch = null;
    if (this.retry) clearTimeout(this.retry);
    closeQuietly(this.master);
  }

  close(): void {
    if (!this.closed) this.shut();
    this.resolveDone();
  }
}
