// runc through child_process (no execa: DESIGN measured its import cost), the way containerd's
// go-runc drives it: a JSON log file per bundle, whose last error becomes the call's error.
import { spawn, type StdioOptions } from 'node:child_process';
import { closeSync, readSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { pipe, type ExitInfo, type Reaper } from '@berth/native';
import { BerthError, Code, notFound } from '@berth/errdefs';

const trace = !!process.env.BERTH_SHIM_TRACE;

export interface RuncConfig {
  /** BinaryName of the runc options; `runc` (from PATH) when empty */
  binary: string;
  /** --root: runc's state folder */
  root: string;
  /** --log: the bundle's log.json */
  log: string;
  systemdCgroup: boolean;
}

export interface RunOptions {
  /** fds (or 'ignore') that runc gets as 0, 1, 2: in pass-through mode they become the container's */
  stdio?: [number | 'ignore', number | 'ignore', number | 'ignore'];
  /** written to runc's stdin (then closed); excludes stdio[0] */
  input?: string;
  /** capture stdout (for ps, state) */
  output?: boolean;
}

export class Runc {
  constructor(
    readonly config: RuncConfig,
    private readonly reaper: Reaper,
  ) {}

  private globals(): string[] {
    const g = ['--root', this.config.root, '--log', this.config.log, '--log-format', 'json'];
    if (this.config.systemdCgroup) g.push('--systemd-cgroup');
    return g;
  }

  /** Runs `runc <globals> ...args`; resolves with stdout when asked, rejects with runc's last logged error. */
  run(args: string[], o: RunOptions = {}): Promise<string> {
    if (!o.output && o.input === undefined && (o.stdio ?? []).every((f) => f === 'ignore' || f > 2)) return this.runForked(args, o);
    return this.runChild(args, o);
  }

  /**
   * The calls on the path of a run (create, start, delete, kill): started by the Reaper without
   * fork() (@berth/native), stderr into a pipe read once runc has exited (runc's error text,
   * when its log has none, is a few lines: far below a pipe's 64 KiB).
   */
  private async runForked(args: string[], o: RunOptions): Promise<string> {
    const started = Date.now();
    const fd = (f: number | 'ignore' | undefined) => (f === undefined || f === 'ignore' ? -1 : f);
    const [r, w] = o.stdio ? [-1, fd(o.stdio[2])] : pipe();
    let exited: Promise<ExitInfo>;
    try {
      exited = this.reaper.spawn(this.config.binary || 'runc', [...this.globals(), ...args], [fd(o.stdio?.[0]), fd(o.stdio?.[1]), w]);
    } catch (e) {
      if (r >= 0) closeSync(r);
      throw new BerthError(Code.Unknown, `runc ${args[0]}: ${(e as Error).message}`, { cause: e });
    } finally {
      if (r >= 0) closeSync(w);
    }
    const exit = await exited;
    const err = r >= 0 ? drain(r) : '';
    if (trace) process.stderr.write(`trace: runc ${args[0]} ${Date.now() - started} ms\n`);
    if (exit.code === 0) return '';
    const why = (await this.lastError(started)) ?? (err.trim() || `exit ${exit.code ?? exit.signal}`);
    throw runcError(args[0]!, why);
  }

  private runChild(args: string[], o: RunOptions): Promise<string> {
    const stdio: StdioOptions = [
      o.input !== undefined ? 'pipe' : (o.stdio?.[0] ?? 'ignore'),
      o.output ? 'pipe' : (o.stdio?.[1] ?? 'ignore'),
      o.stdio ? o.stdio[2] : 'pipe',
    ];
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const child = spawn(this.config.binary || 'runc', [...this.globals(), ...args], { stdio });
      this.reaper.track(child);
      let out = '';
      let err = '';
      child.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
      child.stderr?.setEncoding('utf8').on('data', (c: string) => (err += c));
      if (o.input !== undefined) child.stdin!.end(o.input);
      child.on('error', (e) => reject(new BerthError(Code.Unknown, `runc ${args[0]}: ${e.message}`, { cause: e })));
      child.on('close', (code, signal) => {
        if (trace) process.stderr.write(`trace: runc ${args[0]} ${Date.now() - started} ms\n`);
        if (code === 0) return resolve(out);
        void this.lastError(started).then((logged) => {
          const why = logged ?? (err.trim() || `exit ${code ?? signal}`);
          reject(runcError(args[0]!, why));
        });
      });
    });
  }

  /** The last error runc logged since `since` (its log.json holds one JSON object per line). */
  private async lastError(since: number): Promise<string | undefined> {
    let text: string;
    try {
      text = await readFile(this.config.log, 'utf8');
    } catch {
      return undefined;
    }
    const lines = text.trimEnd().split('\n');
    for (let i = lines.length - 1; i >= 0; i--) {
      try {
        const l = JSON.parse(lines[i]!) as { level?: string; msg?: string; time?: string };
        if (l.time && Date.parse(l.time) < since - 1000) return undefined;
        if (l.level === 'error' && l.msg) return l.msg;
      } catch {}
    }
    return undefined;
  }
}

/** What a pipe's read end holds once its writers are gone (non-blocking: never waits), then closes it. */
function drain(fd: number): string {
  const buf = Buffer.allocUnsafe(65536);
  let out = '';
  try {
    for (;;) {
      const n = readSync(fd, buf);
      if (n === 0) break;
      out += buf.toString('utf8', 0, n);
    }
  } catch {
    // EAGAIN: a process runc left behind still holds the write end; what came is enough
  } finally {
    closeSync(fd);
  }
  return out;
}

function runcError(cmd: string, why: string): BerthError {
  // runc's wording for a container or process that is gone: containerd reports NotFound then
  if (/container does not exist|not exist|no such process|process already finished/i.test(why)) {
    return notFound(`runc ${cmd}: ${why}`);
  }
  return new BerthError(Code.Unknown, `runc did not terminate successfully: ${cmd}: ${why}`);
}
