// The OCI runtime spec of a container, as containerd 1.6's `ctr run` builds it (oci.WithDefaultSpec,
// WithDefaultUnixDevices, WithImageConfig, then the user's flags), with docker's reading of the
// command line: CMD replaces the image's Cmd and keeps its Entrypoint, unless --entrypoint.
import type { ImageConfig } from './image.js';

export const defaultPath = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const caps = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

const mount = (destination: string, type: string, source: string, options: string[]) => ({ destination, type, source, options });

function defaultMounts() {
  return [
    mount('/proc', 'proc', 'proc', ['nosuid', 'noexec', 'nodev']),
    mount('/dev', 'tmpfs', 'tmpfs', ['nosuid', 'strictatime', 'mode=755', 'size=65536k']),
    mount('/dev/pts', 'devpts', 'devpts', ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5']),
    mount('/dev/shm', 'tmpfs', 'shm', ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k']),
    mount('/dev/mqueue', 'mqueue', 'mqueue', ['nosuid', 'noexec', 'nodev']),
    mount('/sys', 'sysfs', 'sysfs', ['nosuid', 'noexec', 'nodev', 'ro']),
    mount('/run', 'tmpfs', 'tmpfs', ['nosuid', 'strictatime', 'mode=755', 'size=65536k']),
  ];
}

// the character devices every container may use (/dev/null, random, full, tty, zero, urandom,
// console, the pts, ptmx), after a deny-all
const allowedDevices: Array<[number, number | undefined]> = [[1, 3], [1, 8], [1, 7], [5, 0], [1, 5], [1, 9], [5, 1], [136, undefined], [5, 2]];

/** containerd's env merge: `K=V` sets or replaces K, a bare `K` removes it. */
export function mergeEnv(base: string[], overrides: string[]): string[] {
  const out = [...base];
  const at = (k: string) => out.findIndex((e) => e.split('=', 1)[0] === k);
  for (const o of overrides) {
    const eq = o.indexOf('=');
    const i = at(eq < 0 ? o : o.slice(0, eq));
    if (eq < 0) {
      if (i >= 0) out.splice(i, 1);
    } else if (i >= 0) out[i] = o;
    else out.push(o);
  }
  return out;
}

/** The container's /etc/passwd and /etc/group, when it has them: names become ids through these. */
export interface UserFiles {
  passwd?: string;
  group?: string;
}

const rows = (text: string | undefined) => (text ?? '').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
const isId = (s: string) => /^\d+$/.test(s) && Number(s) <= 0x7fffffff;

/**
 * uid, gid and supplementary groups of an image's or a flag's user (`name`, `uid`, `name:group`,
 * `uid:gid`), read from the container's own files as containerd's WithUser and
 * WithAdditionalGIDs do; the primary gid comes first among the groups.
 */
export function resolveUser(user: string, files: UserFiles): { uid: number; gid: number; additionalGids: number[] } {
  const passwd = rows(files.passwd);
  const groups = rows(files.group);
  const [u = '', g] = user ? user.split(':') : ['0'];
  let uid: number;
  let gid = 0;
  let name: string | undefined;
  if (isId(u)) {
    uid = Number(u);
    const row = passwd.find((r) => Number(r[2]) === uid);
    name = row?.[0];
    if (row && g === undefined) gid = Number(row[3]);
  } else {
    const row = passwd.find((r) => r[0] === u);
    if (!row) throw new Error(`unable to find user ${u}: no matching entries in passwd file`);
    uid = Number(row[2]);
    name = u;
    if (g === undefined) gid = Number(row[3]);
  }
  if (g !== undefined) {
    if (isId(g)) gid = Number(g);
    else {
      const row = groups.find((r) => r[0] === g);
      if (!row) throw new Error(`unable to find group ${g}: no matching entries in group file`);
      gid = Number(row[2]);
    }
  }
  const extra = name === undefined ? [] : groups.filter((r) => r[0] !== name && (r[3] ?? '').split(',').includes(name)).map((r) => Number(r[2]));
  return { uid, gid, additionalGids: extra.includes(gid) ? extra : [gid, ...extra] };
}

export interface SpecOptions {
  id: string;
  namespace: string;
  image: ImageConfig;
  /** CMD as given after the image (empty: the image's Cmd) */
  args: string[];
  entrypoint?: string;
  env: string[];
  cwd?: string;
  user?: string;
  tty: boolean;
  files: UserFiles;
}

export function buildSpec(o: SpecOptions) {
  const entrypoint = o.entrypoint !== undefined ? (o.entrypoint ? [o.entrypoint] : []) : (o.image.Entrypoint ?? []);
  // docker: a new entrypoint drops the image's Cmd too
  const cmd = o.args.length ? o.args : o.entrypoint !== undefined ? [] : (o.image.Cmd ?? []);
  const args = [...entrypoint, ...cmd];
  if (!args.length) throw new Error('no command specified');
  const imageEnv = o.image.Env?.length ? o.image.Env : [defaultPath];
  const env = mergeEnv(imageEnv, o.env);
  if (o.tty) env.push('TERM=xterm');
  const user = resolveUser(o.user ?? o.image.User ?? '', o.files);
  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: o.tty,
      user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
      args,
      env,
      cwd: o.cwd || o.image.WorkingDir || '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs' },
    // docker names the host after the container
    hostname: o.id.slice(0, 12),
    mounts: defaultMounts(),
    linux: {
      resources: {
        devices: [{ allow: false, access: 'rwm' }, ...allowedDevices.map(([major, minor]) => ({ allow: true, type: 'c', major, ...(minor === undefined ? {} : { minor }), access: 'rwm' }))],
      },
      cgroupsPath: `/${o.namespace}/${o.id}`,
      namespaces: ['pid', 'ipc', 'uts', 'mount', 'network'].map((type) => ({ type })),
      maskedPaths: ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/sys/firmware', '/proc/scsi'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

export type Spec = ReturnType<typeof buildSpec>;
