// `berth run`: docker run on the containerd API, built as containerd 1.6's ctr builds a
// container (spec from the image config, a snapshot on the image's chain id under a lease until
// the container record holds it), then the task: attached through FIFOs with the exit status
// passed through, or detached with its output in a log file under the state folder.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { specToAny } from '@berth/api';
import { client, containerCommon, CommandError, isAlreadyExists, isNotFound, unary } from '../grpc.js';
import { followProgress } from '../images.js';
import { parseLeading } from './args.js';
import { resolveImage } from './image.js';
import { labels, removeContainer, retireTask, type Container } from './lifecycle.js';
import { runAttached, startFailure } from './process.js';
import { readRootfsFile, type Mount } from './rootfs.js';
import { buildSpec } from './spec.js';
import { Fifos } from './stdio.js';

const usage = 'usage: berth run [-d] [-t] [-i] [--rm] [--name NAME] [-e K=V]... [-w DIR] [-u USER] [--entrypoint CMD] [--address SOCK] [-n NS] IMAGE [CMD...]';
const snapshotter = 'overlayfs';
const runtime = 'io.containerd.runc.v2';

export const options = {
  ...containerCommon,
  detach: { type: 'boolean', short: 'd', default: false },
  tty: { type: 'boolean', short: 't', default: false },
  interactive: { type: 'boolean', short: 'i', default: false },
  rm: { type: 'boolean', default: false },
  name: { type: 'string' },
  env: { type: 'string', short: 'e', multiple: true, default: [] as string[] },
  workdir: { type: 'string', short: 'w' },
  user: { type: 'string', short: 'u' },
  entrypoint: { type: 'string' },
} as const;

/** Berth's state folder, where the socket lives unless BERTH_STATE says otherwise. */
export const stateDir = (address: string) => process.env.BERTH_STATE || dirname(address);

/** docker's `-e K`: the value from this environment, or nothing. */
const envFlag = (e: string) => (e.includes('=') ? [e] : process.env[e] !== undefined ? [`${e}=${process.env[e]}`] : []);

const conflict = (id: string) =>
  new CommandError(`Conflict. The container name "${id}" is already in use. You have to remove (or rename) that container to be able to reuse that name.`, 125);

export async function runCommand(args: string[]): Promise<number> {
  const { values: v, rest } = parseLeading(args, options, usage);
  const [ref, ...cmd] = rest;
  if (!ref) throw new CommandError(`"berth run" requires at least 1 argument.\n${usage}`, 125);
  if (v.name !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(v.name)) throw new CommandError(`Invalid container name (${v.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`, 125);
  // a detached process's output goes to a log file (a terminal's through the shim, which holds
  // the pty); an open stdin with no terminal would need a writer that outlives this command
  // (docker's daemon). With -t the terminal's input stays open while the container runs, so
  // `-dit` keeps a shell alive as docker's does.
  if (v.detach && v.interactive && !v.tty) throw new CommandError('run -d -i needs -t: a detached container has no stdin to keep open, only a terminal', 125);
  const id = v.name ?? randomBytes(6).toString('hex');
  const ns = v.namespace;
  const c = client(v.address);
  try {
    return await run();
  } catch (e) {
    // docker run's own failures (the daemon's, a pull's) exit 125; the process's are passed on
    if (e instanceof CommandError && e.status === 1) throw new CommandError(e.message, 125, e.code);
    throw e;
  } finally {
    c.close();
  }

  async function run(): Promise<number> {
    try {
      await unary(c, '/containerd.services.containers.v1.Containers/Get', { id }, ns);
      throw conflict(id);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    const image = await resolveImage(c, ns, ref!, async (name, plainHttp) => {
      await followProgress('/berth.images.v1.Transfer/Pull', { ref: name, plain_http: plainHttp, platforms: [], labels: {} }, v.address, ns, process.stderr);
    });
    const { container, mounts } = await create(image);
    const logPath = container.labels[labels.log];
    const fifos = v.detach ? null : new Fifos(Fifos.dirUnder(join(stateDir(v.address), 'fifo')), id, { stdin: v.interactive, terminal: v.tty });
    const uri = v.detach ? `file://${logPath}` : '';
    try {
      try {
        await unary(
          c,
          '/containerd.services.tasks.v1.Tasks/Create',
          { container_id: id, rootfs: mounts, stdin: fifos?.paths.stdin ?? '', stdout: fifos?.paths.stdout ?? uri, stderr: fifos ? fifos.paths.stderr : v.tty ? '' : uri, terminal: v.tty },
          ns,
        );
      } catch (e) {
        if (v.rm) await removeContainer(c, ns, container, true);
        throw startFailure(e);
      }
      if (!fifos) {
        try {
          await unary(c, '/containerd.services.tasks.v1.Tasks/Start', { container_id: id }, ns);
        } catch (e) {
          await (v.rm ? removeContainer(c, ns, container, true) : retireTask(c, ns, id));
          throw startFailure(e);
        }
        if (v.rm) removeOnExit(v.address, ns, id);
        process.stdout.write(`${id}\n`);
        return 0;
      }
      let status: number;
      try {
        status = await runAttached({ c, ns, id, execId: '', fifos, log: logPath, interactive: v.interactive, tty: v.tty, start: () => unary(c, '/containerd.services.tasks.v1.Tasks/Start', { container_id: id }, ns) });
      } catch (e) {
        await (v.rm ? removeContainer(c, ns, container, true) : retireTask(c, ns, id)).catch(() => {});
        throw e;
      }
      // the task's delete lets go of the FIFOs: the output then reaches its end
      await (v.rm ? removeContainer(c, ns, container, true) : retireTask(c, ns, id));
      await fifos.drained(2000);
      return status;
    } finally {
      fifos?.close();
    }
  }

  async function create(image: Awaited<ReturnType<typeof resolveImage>>): Promise<{ container: Container; mounts: Mount[] }> {
    // the lease keeps the new snapshot until the container record refers to it
    const lease = `berth-run-${id}-${randomBytes(4).toString('hex')}`;
    const expire = new Date(Date.now() + 3600_000).toISOString();
    await unary(c, '/containerd.services.leases.v1.Leases/Create', { id: lease, labels: { 'containerd.io/gc.expire': expire } }, ns);
    try {
      let mounts: Mount[];
      try {
        ({ mounts } = await unary<{ mounts: Mount[] }>(c, '/containerd.services.snapshots.v1.Snapshots/Prepare', { snapshotter, key: id, parent: image.chainId, labels: {} }, ns, lease));
      } catch (e) {
        if (isNotFound(e)) throw new CommandError(`image ${image.name} is not unpacked for ${snapshotter} (${(e as Error).message}): pull it again, or import it without --no-unpack`, 125);
        throw isAlreadyExists(e) ? conflict(id) : e;
      }
      const removeSnapshot = () => unary(c, '/containerd.services.snapshots.v1.Snapshots/Remove', { snapshotter, key: id }, ns).catch(() => {});
      let spec;
      try {
        spec = buildSpec({
          id,
          namespace: ns,
          image: image.config,
          args: cmd,
          entrypoint: v.entrypoint,
          env: v.env.flatMap(envFlag),
          cwd: v.workdir,
          user: v.user,
          tty: v.tty,
          files: { passwd: readRootfsFile(mounts, 'etc/passwd'), group: readRootfsFile(mounts, 'etc/group') },
        });
      } catch (e) {
        await removeSnapshot();
        throw new CommandError((e as Error).message, 125);
      }
      const own: Record<string, string> = { ...(image.config.Labels ?? {}), [labels.stopSignal]: image.config.StopSignal || 'SIGTERM' };
      // docker keeps every container's output for `logs`: a detached one's the shim writes, an
      // attached one's this command copies as it shows it (one that --rm removes keeps none)
      if (v.detach || !v.rm) own[labels.log] = join(stateDir(v.address), 'logs', 'containers', ns, `${id}.log`);
      const container = { id, labels: own, image: image.name, runtime: { name: runtime, options: null }, spec: specToAny(spec), snapshotter, snapshot_key: id };
      try {
        return { container: (await unary<{ container: Container }>(c, '/containerd.services.containers.v1.Containers/Create', { container }, ns, lease)).container, mounts };
      } catch (e) {
        await removeSnapshot();
        throw isAlreadyExists(e) ? conflict(id) : e;
      }
    } finally {
      await unary(c, '/containerd.services.leases.v1.Leases/Delete', { id: lease, sync: false }, ns).catch(() => {});
    }
  }
}

/** `-d --rm`: with no daemon to remember it, a detached `berth` waits for the exit and removes. */
function removeOnExit(address: string, ns: string, id: string): void {
  spawn(process.execPath, [process.argv[1]!, 'rm-on-exit', '--address', address, '-n', ns, id], { detached: true, stdio: 'ignore' }).unref();
}
