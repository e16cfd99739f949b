// One process of a container (its init or an exec) as the shim tracks it, and what of it is
// persisted so a restarted host can take it back.
import { readFileSync } from 'node:fs';
import type { Timestamp } from '@berth/api';
import type { ProcessIO, Stdio } from './stdio.js';

export type Status = 'created' | 'running' | 'paused' | 'stopped' | 'deleted';

/** What a restarted host needs to know of a process. */
export interface ProcessRecord {
  execId: string;
  pid: number;
  /** /proc/<pid>/stat field 22 when it was started: a pid only counts as this process if it matches */
  startTime: string;
  stdio: Stdio;
  status: Status;
  exitStatus?: number;
  exitedAt?: Timestamp;
}

export class Proc {
  pid = 0;
  startTime = '';
  status: Status = 'created';
  exitStatus = 0;
  exitedAt: Timestamp | undefined;
  io: ProcessIO | null = null;
  /** the process spec of an exec (JSON), written for runc exec */
  spec: unknown;
  /** set while Start runs: an exit seen meanwhile is reported after /tasks/start */
  starting = false;
  deferredExit: { status: number; at: Timestamp } | null = null;
  /** the last signal sent: a re-adopted process's status is only known when it was SIGKILL */
  lastSignal = 0;
  /** a re-adopted process is not our child: its exit is seen through a pidfd */
  adopted = false;
  readonly exited: Promise<void>;
  private markExited!: () => void;

  constructor(
    /** the container id for the init, else the exec id */
    readonly id: string,
    readonly execId: string,
    readonly stdio: Stdio,
  ) {
    this.exited = new Promise((r) => (this.markExited = r));
  }

  get isInit(): boolean {
    return this.execId === '';
  }

  setExited(status: number, at: Timestamp): void {
    this.status = 'stopped';
    this.exitStatus = status;
    this.exitedAt = at;
    this.markExited();
  }

  record(): ProcessRecord {
    return { execId: this.execId, pid: this.pid, startTime: this.startTime, stdio: this.stdio, status: this.status, exitStatus: this.exitStatus, exitedAt: this.exitedAt };
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); '' if the pid is gone. */
export function startTimeOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command (field 2) may hold spaces and parentheses: count from the last ')'
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[22 - 3] ?? '';
  } catch {
    return '';
  }
}

/** A process counts as alive only if its pid still names the very process that was started. */
export function stillRuns(pid: number, startTime: string): boolean {
  return pid > 0 && startTime !== '' && startTimeOf(pid) === startTime;
}

/** A wait status as containerd reports it: the exit code, or 128 + the signal. */
export function exitCode(e: { code: number | null; signal: number | null }): number {
  return e.signal ? 128 + e.signal : (e.code ?? 0);
}
