// A container's cgroup, as containerd's shim reads it: metrics in containerd's cgroup types
// (io.containerd.cgroups.v1.Metrics or v2), and the OOM-kill counter the OOM watch compares.
import { existsSync, readFileSync, readdirSync, writeFileSync, openSync, closeSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { toAny, type Any } from '@berth/api';
import { Watch, eventfd, eventfdRead } from '@berth/native';

const ROOT = '/sys/fs/cgroup';

export const unified = (root = ROOT) => existsSync(join(root, 'cgroup.controllers'));

/** Where a process's cgroup is: v2 one folder, v1 a folder per controller. */
export interface CgroupPaths {
  v2?: string;
  v1?: Record<string, string>;
}

/** From /proc/<pid>/cgroup (read it while the process lives: the paths outlast it until runc delete). */
export function cgroupOf(pid: number, root = ROOT): CgroupPaths {
  const text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  if (unified(root)) {
    const line = text.split('\n').find((l) => l.startsWith('0::'));
    return line ? { v2: join(root, line.slice(3)) } : {};
  }
  const v1: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (!ctrls || path === undefined) continue;
    for (const c of ctrls.split(',')) {
      const name = c.replace(/^name=/, '');
      const dir = join(root, name, path);
      if (existsSync(dir)) v1[name] = dir;
      else if (existsSync(join(root, ctrls, path))) v1[name] = join(root, ctrls, path);
    }
  }
  return { v1 };
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

const num = (s: string | undefined): number => {
  if (s === undefined) return 0;
  const t = s.trim();
  if (t === 'max' || t === '') return 0;
  const n = Number(t);
  return Number.isFinite(n) ? n : 0;
};

/** "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control). */
export function keyValues(text: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of (text ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) out[k] = Number(v);
  }
  return out;
}

export function statsV1(dirs: Record<string, string>): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  const pids = dirs.pids;
  if (pids && existsSync(pids)) m.pids = { current: num(read(join(pids, 'pids.current'))), limit: num(read(join(pids, 'pids.max'))) };
  const acct = dirs.cpuacct;
  if (acct && existsSync(acct)) {
    const st = keyValues(read(join(acct, 'cpuacct.stat')));
    const tick = 1e9 / 100; // USER_HZ
    const cpuStat = dirs.cpu ? keyValues(read(join(dirs.cpu, 'cpu.stat'))) : {};
    m.cpu = {
      usage: {
        total: num(read(join(acct, 'cpuacct.usage'))),
        kernel: (st.system ?? 0) * tick,
        user: (st.user ?? 0) * tick,
        per_cpu: (read(join(acct, 'cpuacct.usage_percpu')) ?? '').trim().split(/\s+/).filter(Boolean).map(Number),
      },
      throttling: { periods: cpuStat.nr_periods ?? 0, throttled_periods: cpuStat.nr_throttled ?? 0, throttled_time: cpuStat.throttled_time ?? 0 },
    };
  }
  const mem = dirs.memory;
  if (mem && existsSync(mem)) {
    const s = keyValues(read(join(mem, 'memory.stat')));
    const entry = (p: string) => ({
      usage: num(read(join(mem, `memory.${p}usage_in_bytes`))),
      max: num(read(join(mem, `memory.${p}max_usage_in_bytes`))),
      failcnt: num(read(join(mem, `memory.${p}failcnt`))),
      limit: num(read(join(mem, `memory.${p}limit_in_bytes`))),
    });
    const memory: Record<string, unknown> = {
      usage: entry(''),
      swap: entry('memsw.'),
      kernel: entry('kmem.'),
      kernel_tcp: entry('kmem.tcp.'),
      pg_pg_in: s.pgpgin ?? 0,
      pg_pg_out: s.pgpgout ?? 0,
      pg_fault: s.pgfault ?? 0,
      pg_maj_fault: s.pgmajfault ?? 0,
      total_pg_pg_in: s.total_pgpgin ?? 0,
      total_pg_pg_out: s.total_pgpgout ?? 0,
      total_pg_fault: s.total_pgfault ?? 0,
      total_pg_maj_fault: s.total_pgmajfault ?? 0,
      hierarchical_swap_limit: s.hierarchical_memsw_limit ?? 0,
    };
    for (const k of ['cache', 'rss', 'rss_huge', 'mapped_file', 'dirty', 'writeback', 'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable', 'hierarchical_memory_limit']) {
      memory[k] = s[k] ?? 0;
      if (k !== 'hierarchical_memory_limit') memory[`total_${k}`] = s[`total_${k}`] ?? 0;
    }
    m.memory = memory;
    const oc = keyValues(read(join(mem, 'memory.oom_control')));
    m.memory_oom_control = { oom_kill_disable: oc.oom_kill_disable ?? 0, under_oom: oc.under_oom ?? 0, oom_kill: oc.oom_kill ?? 0 };
  }
  const blk = dirs.blkio;
  if (blk && existsSync(blk)) {
    const entries = (name: string) => {
      let text = read(join(blk, `blkio.${name}`));
      if (!text?.trim() || /^Total 0\s*$/.test(text.trim())) text = read(join(blk, `blkio.throttle.${name.replace('_recursive', '')}`)) ?? text;
      return blkEntries(text);
    };
    m.blkio = {
      io_service_bytes_recursive: entries('io_service_bytes_recursive'),
      io_serviced_recursive: entries('io_serviced_recursive'),
      io_queued_recursive: blkEntries(read(join(blk, 'blkio.io_queued_recursive'))),
      io_service_time_recursive: blkEntries(read(join(blk, 'blkio.io_service_time_recursive'))),
      io_wait_time_recursive: blkEntries(read(join(blk, 'blkio.io_wait_time_recursive'))),
      io_merged_recursive: blkEntries(read(join(blk, 'blkio.io_merged_recursive'))),
      io_time_recursive: blkEntries(read(join(blk, 'blkio.time_recursive'))),
      sectors_recursive: blkEntries(read(join(blk, 'blkio.sectors_recursive'))),
    };
  }
  const huge = dirs.hugetlb;
  if (huge && existsSync(huge)) {
    m.hugetlb = hugePageSizes(huge, 'hugetlb.', '.usage_in_bytes').map((size) => ({
      pagesize: size,
      usage: num(read(join(huge, `hugetlb.${size}.usage_in_bytes`))),
      max: num(read(join(huge, `hugetlb.${size}.max_usage_in_bytes`))),
      failcnt: num(read(join(huge, `hugetlb.${size}.failcnt`))),
    }));
  }
  return m;
}

function hugePageSizes(dir: string, prefix: string, suffix: string): string[] {
  try {
    return readdirSync(dir)
      .filter((f) => f.startsWith(prefix) && f.endsWith(suffix) && !f.includes('.rsvd.'))
      .map((f) => f.slice(prefix.length, -suffix.length));
  } catch {
    return [];
  }
}

const deviceNames = new Map<string, string>();
function deviceName(major: number, minor: number): string {
  const key = `${major}:${minor}`;
  let name = deviceNames.get(key);
  if (name === undefined) {
    const dev = /DEVNAME=(.*)/.exec(read(`/sys/dev/block/${key}/uevent`) ?? '')?.[1];
    name = dev ? `/dev/${dev}` : '';
    deviceNames.set(key, name);
  }
  return name;
}

/** blkio's "major:minor Op value" lines (the "Total" line is not an entry). */
export function blkEntries(text: string | undefined): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of (text ?? '').split('\n')) {
    const f = line.trim().split(/\s+/);
    const mm = /^(\d+):(\d+)$/.exec(f[0] ?? '');
    if (!mm) continue;
    const major = Number(mm[1]);
    const minor = Number(mm[2]);
    const [op, value] = f.length === 3 ? [f[1]!, f[2]!] : ['', f[1]!];
    out.push({ device: deviceName(major, minor), major, minor, op, value: Number(value) });
  }
  return out;
}

export function statsV2(dir: string): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  m.pids = { current: num(read(join(dir, 'pids.current'))), limit: num(read(join(dir, 'pids.max'))) };
  const c = keyValues(read(join(dir, 'cpu.stat')));
  m.cpu = {
    usage_usec: c.usage_usec ?? 0,
    user_usec: c.user_usec ?? 0,
    system_usec: c.system_usec ?? 0,
    nr_periods: c.nr_periods ?? 0,
    nr_throttled: c.nr_throttled ?? 0,
    throttled_usec: c.throttled_usec ?? 0,
  };
  const s = keyValues(read(join(dir, 'memory.stat')));
  const memory: Record<string, number> = {};
  for (const k of ['anon', 'file', 'kernel_stack', 'slab', 'sock', 'shmem', 'file_mapped', 'file_dirty', 'file_writeback', 'anon_thp', 'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable', 'slab_reclaimable', 'slab_unreclaimable', 'pgfault', 'pgmajfault', 'workingset_nodereclaim', 'pgrefill', 'pgscan', 'pgsteal', 'pgactivate', 'pgdeactivate', 'pglazyfree', 'pglazyfreed', 'thp_fault_alloc', 'thp_collapse_alloc']) {
    memory[k] = s[k] ?? 0;
  }
  // newer kernels split these into _anon and _file
  memory.workingset_refault = s.workingset_refault ?? (s.workingset_refault_anon ?? 0) + (s.workingset_refault_file ?? 0);
  memory.workingset_activate = s.workingset_activate ?? (s.workingset_activate_anon ?? 0) + (s.workingset_activate_file ?? 0);
  memory.usage = num(read(join(dir, 'memory.current')));
  memory.usage_limit = num(read(join(dir, 'memory.max')));
  memory.swap_usage = num(read(join(dir, 'memory.swap.current')));
  memory.swap_limit = num(read(join(dir, 'memory.swap.max')));
  m.memory = memory;
  const usage: Record<string, number>[] = [];
  for (const line of (read(join(dir, 'io.stat')) ?? '').split('\n')) {
    const [dev, ...kv] = line.trim().split(/\s+/);
    const mm = /^(\d+):(\d+)$/.exec(dev ?? '');
    if (!mm) continue;
    const e: Record<string, number> = { major: Number(mm[1]), minor: Number(mm[2]), rbytes: 0, wbytes: 0, rios: 0, wios: 0 };
    for (const p of kv) {
      const [k, v] = p.split('=');
      if (k && k in e) e[k] = Number(v);
    }
    usage.push(e);
  }
  m.io = { usage };
  m.hugetlb = hugePageSizes(dir, 'hugetlb.', '.current').map((size) => ({
    pagesize: size,
    current: num(read(join(dir, `hugetlb.${size}.current`))),
    max: num(read(join(dir, `hugetlb.${size}.max`))),
  }));
  const ev = keyValues(read(join(dir, 'memory.events')));
  m.memory_events = { low: ev.low ?? 0, high: ev.high ?? 0, max: ev.max ?? 0, oom: ev.oom ?? 0, oom_kill: ev.oom_kill ?? 0 };
  return m;
}

/** The Stats answer: containerd's metrics type for the hierarchy in use, as Any. */
export function metrics(paths: CgroupPaths): Any {
  if (paths.v2) return toAny('io.containerd.cgroups.v2.Metrics', statsV2(paths.v2));
  return toAny('io.containerd.cgroups.v1.Metrics', statsV1(paths.v1 ?? {}));
}

/** How many processes the kernel's OOM killer has killed in this cgroup so far. */
export function oomKills(paths: CgroupPaths): number {
  if (paths.v2) return keyValues(read(join(paths.v2, 'memory.events'))).oom_kill ?? 0;
  const mem = paths.v1?.memory;
  if (!mem) return 0;
  const oc = keyValues(read(join(mem, 'memory.oom_control')));
  // kernels before 4.13 have no counter; under_oom is the best there is
  return oc.oom_kill ?? oc.under_oom ?? 0;
}

/**
 * Calls `onChange` when the cgroup may have had an OOM: an eventfd on memory.oom_control (v1)
 * or an inotify watch on memory.events (v2). The caller compares oomKills() to what it has
 * already reported, so a notice that was only the cgroup going away reports nothing.
 */
export class OomWatch {
  private efd: number | null = null;
  private watch: Watch | null = null;
  private fsw: FSWatcher | null = null;

  constructor(paths: CgroupPaths, onChange: () => void) {
    if (paths.v2) {
      try {
        this.fsw = watch(join(paths.v2, 'memory.events'), { persistent: false }, () => onChange());
        this.fsw.on('error', () => this.stop());
      } catch {}
      return;
    }
    const mem = paths.v1?.memory;
    if (!mem) return;
    let ocfd: number | null = null;
    try {
      this.efd = eventfd();
      ocfd = openSync(join(mem, 'memory.oom_control'), 'r');
      writeFileSync(join(mem, 'cgroup.event_control'), `${this.efd} ${ocfd}`);
      this.watch = new Watch(this.efd, () => {
        if (this.efd !== null) eventfdRead(this.efd);
        onChange();
        if (!existsSync(mem)) this.stop();
      }).unref();
    } catch {
      this.stop();
    } finally {
      if (ocfd !== null) closeSync(ocfd); // the kernel holds its own reference once registered
    }
  }

  stop(): void {
    this.watch?.stop();
    this.watch = null;
    if (this.efd !== null) {
      try {
        closeSync(this.efd);
      } catch {}
      this.efd = null;
    }
    this.fsw?.close();
    this.fsw = null;
  }
}
