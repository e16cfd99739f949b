// What an earlier `berth up` on the same root left running: its nats-server (on the store and
// maybe the port we want) and services holding RocksDB's LOCK files. Each is recognised by its
// command line (/proc/<pid>/cmdline: the nats-server config file under the root, or a service's
// entry with `--berth-root <root>`), never by a pid file alone (a pid may have been reused).
import { readdirSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';

export const rootFlag = '--berth-root';

function cmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw ? raw.replace(/\0$/, '').split('\0') : undefined;
  } catch {
    return undefined;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const m = /^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    // a zombie has exited already: only its parent's wait is missing
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** A `berth up` process (of this installation or another): what must not be fought over. */
export function isSupervisor(argv: string[] | undefined): boolean {
  if (!argv) return false;
  const i = argv.findIndex((a) => a.endsWith('/cli/dist/main.js'));
  return i >= 0 && argv[i + 1] === 'up';
}

export interface Leftover {
  pid: number;
  what: string;
}

/** Processes of an earlier run on `root`: its nats-server (by config file) and services. */
export function findLeftovers(root: string, natsConfig: string): Leftover[] {
  const found: Leftover[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const argv = cmdline(pid);
    if (!argv) continue;
    if (basename(argv[0]!) === 'nats-server' && argv.includes(natsConfig)) found.push({ pid, what: 'nats-server' });
    else {
      const i = argv.indexOf(rootFlag);
      const entryFile = argv.find((a) => /\/services\/[^/]+\/dist\/main\.js$/.test(a));
      if (i >= 0 && argv[i + 1] === root && entryFile) found.push({ pid, what: basename(entryFile.split('/dist/')[0]!) });
    }
  }
  return found;
}

/**
 * Ends what an earlier run left behind. A leftover whose parent is a live `berth up` is not left
 * behind: that stack is running, and this is an error, not a clean-up.
 */
export async function endLeftovers(root: string, natsConfig: string, log: (msg: string) => void): Promise<void> {
  const found = findLeftovers(root, natsConfig);
  for (const l of found) {
    const parent = parentOf(l.pid);
    if (parent !== undefined && parent !== process.pid && isSupervisor(cmdline(parent))) {
      throw new Error(`another berth up (pid ${parent}) is running on root ${root}`);
    }
  }
  if (!found.length) return;
  log(`ending what an earlier run left: ${found.map((l) => `${l.what} (pid ${l.pid})`).join(', ')}`);
  // a clean stop first (RocksDB closes, nats-server flushes), then no more waiting
  for (const l of found) signal(l.pid, 'SIGTERM');
  const deadline = Date.now() + 3000;
  while (found.some((l) => alive(l.pid)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const l of found) if (alive(l.pid)) signal(l.pid, 'SIGKILL');
  const hard = Date.now() + 3000;
  while (found.some((l) => alive(l.pid)) && Date.now() < hard) await new Promise((r) => setTimeout(r, 50));
  const left = found.filter((l) => alive(l.pid));
  if (left.length) throw new Error(`cannot end ${left.map((l) => `${l.what} (pid ${l.pid})`).join(', ')} left by an earlier run`);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}
