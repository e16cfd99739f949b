// The two snapshotters' halves that touch the disk: where a snapshot's directory is, how a new
// one is made, and the Mount records a client gets (containerd's snapshots/overlay and
// snapshots/native). Directories live in `<root>/snapshots/<id>`; a new one is made as
// `new-<id>` and renamed into place, a removed one is renamed to `rm-<id>` before it is deleted,
// so a crash leaves only names that Cleanup recognises.
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { chmod, lchown, mkdir, rm, stat } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { MountSpec } from '@berth/native';

export type Kind = 'ACTIVE' | 'VIEW' | 'COMMITTED';

/** What the mounts of a snapshot depend on: its directory and its parents' (nearest first). */
export interface Placed {
  id: string;
  kind: Kind;
  chain: string[];
}

export interface Driver {
  readonly name: string;
  /** `<root>/snapshots`: one directory per snapshot, by id */
  readonly dir: string;
  /** what `ctr plugins ls -d` shows as the plugin's exports */
  readonly exports: Record<string, string>;
  /** Makes the new snapshot's directory under `tmp` (a view of a parent may need none: false). */
  make(tmp: string, kind: Kind, chain: string[]): Promise<boolean>;
  /** the directory whose usage is the snapshot's own */
  usageDir(id: string): string;
  mounts(s: Placed): MountSpec[];
}

const execFileP = promisify(execFile);

export class Overlay implements Driver {
  readonly name = 'overlayfs';
  readonly dir: string;
  readonly exports: Record<string, string>;
  private readonly indexOff: boolean;
  private readonly userxattr: boolean;

  constructor(readonly root: string) {
    this.dir = join(root, 'snapshots');
    this.exports = { root };
    // containerd sets index=off whenever the kernel has the parameter: an index ties upper and
    // lower layers together and would refuse a layer shared by two mounts
    this.indexOff = exists('/sys/module/overlay/parameters/index');
    this.userxattr = needsUserXattr(root);
  }

  upper(id: string): string {
    return join(this.dir, id, 'fs');
  }

  async make(tmp: string, kind: Kind, chain: string[]): Promise<boolean> {
    // independent steps side by side: each is a round trip through libuv's pool, and one after
    // another they were most of a Prepare's time under load
    const [st] = await Promise.all([chain.length ? stat(this.upper(chain[0]!)) : undefined, mkdir(tmp, { mode: 0o700 })]);
    await Promise.all([mkdir(join(tmp, 'fs'), { mode: 0o755 }), kind === 'ACTIVE' ? mkdir(join(tmp, 'work'), { mode: 0o711 }) : undefined]);
    // the new upper belongs to whoever owns the parent's root (a userns-remapped image); made by
    // this process, it has this process's owner already (one round trip less on the path of a run)
    if (st && (st.uid !== process.getuid?.() || st.gid !== process.getgid?.())) await lchown(join(tmp, 'fs'), st.uid, st.gid);
    return true;
  }

  usageDir(id: string): string {
    return this.upper(id);
  }

  mounts(s: Placed): MountSpec[] {
    if (!s.chain.length) {
      return [{ type: 'bind', source: this.upper(s.id), options: [s.kind === 'VIEW' ? 'ro' : 'rw', 'rbind'] }];
    }
    const options: string[] = [];
    if (this.indexOff) options.push('index=off');
    if (this.userxattr) options.push('userxattr');
    if (s.kind === 'ACTIVE') {
      options.push(`workdir=${join(this.dir, s.id, 'work')}`, `upperdir=${this.upper(s.id)}`);
    } else if (s.chain.length === 1) {
      // a read-only view of one layer needs no overlay
      return [{ type: 'bind', source: this.upper(s.chain[0]!), options: ['ro', 'rbind'] }];
    }
    options.push(`lowerdir=${s.chain.map((id) => this.upper(id)).join(':')}`);
    return [{ type: 'overlay', source: 'overlay', options }];
  }
}

export class Native implements Driver {
  readonly name = 'native';
  readonly dir: string;
  readonly exports: Record<string, string> = {};

  constructor(readonly root: string) {
    this.dir = join(root, 'snapshots');
  }

  async make(tmp: string, kind: Kind, chain: string[]): Promise<boolean> {
    // a view of a parent mounts the parent itself, read-only: nothing to make
    if (kind !== 'ACTIVE' && chain.length) return false;
    await mkdir(tmp, { mode: 0o755 });
    await chmod(tmp, 0o755);
    if (chain.length) {
      // A full copy keeping owners, modes, times, xattrs, hard links, devices and sparseness:
      // coreutils' cp -a does all of it in one pass, which Node's fs.cp does not (no owners,
      // xattrs or device nodes).
      try {
        await execFileP('cp', ['-a', '--preserve=all', '--sparse=always', '--', `${join(this.dir, chain[0]!)}/.`, tmp], { maxBuffer: 1 << 20 });
      } catch (e) {
        await rm(tmp, { recursive: true, force: true });
        throw new Error(`copying of parent failed: ${String((e as { stderr?: string }).stderr ?? e).trim()}`);
      }
    }
    return true;
  }

  usageDir(id: string): string {
    return join(this.dir, id);
  }

  mounts(s: Placed): MountSpec[] {
    const source = !s.chain.length || s.kind === 'ACTIVE' ? join(this.dir, s.id) : join(this.dir, s.chain[0]!);
    return [{ type: 'bind', source, options: ['rbind', s.kind === 'VIEW' ? 'ro' : 'rw'] }];
  }
}

function exists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}

// containerd's overlayutils.NeedsUserXAttr: only a root that is not the host's (in a user
// namespace) needs overlay's user.* xattrs, not on tmpfs, and from Linux 5.11 on.
function needsUserXattr(root: string): boolean {
  let map = '';
  try {
    map = readFileSync('/proc/self/uid_map', 'utf8');
  } catch {
    return false;
  }
  const [inside, outside, count] = map.trim().split(/\s+/).map(Number);
  if (inside === 0 && outside === 0 && count === 4294967295) return false;
  if (onTmpfs(root)) return false;
  const [major = 0, minor = 0] = release().split('.').map((x) => parseInt(x, 10));
  return major > 5 || (major === 5 && minor >= 11);
}

function onTmpfs(p: string): boolean {
  // the longest mount point in /proc/self/mounts that holds p
  let best = '';
  let type = '';
  try {
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const [, point, fstype] = line.split(' ');
      if (!point || !fstype) continue;
      if ((p === point || p.startsWith(point.endsWith('/') ? point : point + '/')) && point.length > best.length) {
        best = point;
        type = fstype;
      }
    }
  } catch {
    return false;
  }
  return type === 'tmpfs';
}
