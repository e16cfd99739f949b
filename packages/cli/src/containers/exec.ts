// `berth exec [-i] [-t] [-e K=V] [-w DIR] [-u USER] CONTAINER CMD...`: docker exec. The new
// process takes the container's process spec (user, env, cwd, capabilities) with the command
// and flags laid over it, runs attached, and its exit status is this command's.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { specFromAny, type Any } from '@berth/api';
import { client, containerCommon, CommandError, unary } from '../grpc.js';
import { parseLeading } from './args.js';
import { getContainer, getTask, isLive } from './lifecycle.js';
import { runAttached, startFailure } from './process.js';
import { stateDir } from './run.js';
import { mergeEnv } from './spec.js';
import { Fifos } from './stdio.js';

const usage = 'usage: berth exec [-i] [-t] [-e K=V]... [-w DIR] [-u UID[:GID]] [--address SOCK] [-n NS] CONTAINER CMD...';

const options = {
  ...containerCommon,
  interactive: { type: 'boolean', short: 'i', default: false },
  tty: { type: 'boolean', short: 't', default: false },
  env: { type: 'string', short: 'e', multiple: true, default: [] as string[] },
  workdir: { type: 'string', short: 'w' },
  user: { type: 'string', short: 'u' },
} as const;

export async function execCommand(args: string[]): Promise<number> {
  const { values: v, rest } = parseLeading(args, options, usage);
  const [id, ...cmd] = rest;
  if (!id || !cmd.length) throw new CommandError(`"berth exec" requires at least 2 arguments.\n${usage}`);
  const ns = v.namespace;
  const c = client(v.address);
  try {
    const container = await getContainer(c, ns, id);
    if (!isLive(await getTask(c, ns, id))) throw new CommandError(`Container ${id} is not running`);
    const spec = specFromAny<{ process: { args: string[]; env?: string[]; cwd: string; terminal: boolean; user: { uid: number; gid: number; additionalGids?: number[] } } }>(container.spec as Any);
    const proc = { ...spec.process, args: cmd, terminal: v.tty, env: mergeEnv(spec.process.env ?? [], [...v.env, ...(v.tty ? ['TERM=xterm'] : [])]) };
    if (v.workdir) proc.cwd = v.workdir;
    if (v.user) {
      const [uid, gid] = v.user.split(':');
      if (!/^\d+$/.test(uid!) || (gid !== undefined && !/^\d+$/.test(gid))) throw new CommandError(`exec -u takes UID[:GID]: ${v.user}`);
      proc.user = { uid: Number(uid), gid: Number(gid ?? 0), additionalGids: [Number(gid ?? 0)] };
    }
    const execId = `exec-${randomBytes(6).toString('hex')}`;
    const fifos = new Fifos(Fifos.dirUnder(join(stateDir(v.address), 'fifo')), execId, { stdin: v.interactive, terminal: v.tty });
    try {
      const { stdin, stdout, stderr, terminal } = fifos.paths;
      try {
        await unary(
          c,
          '/containerd.services.tasks.v1.Tasks/Exec',
          { container_id: id, exec_id: execId, stdin, stdout, stderr, terminal, spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(proc)) } },
          ns,
        );
      } catch (e) {
        throw startFailure(e);
      }
      try {
        const status = await runAttached({
          c,
          ns,
          id,
          execId,
          fifos,
          interactive: v.interactive,
          tty: v.tty,
          start: () => unary(c, '/containerd.services.tasks.v1.Tasks/Start', { container_id: id, exec_id: execId }, ns),
        });
        await fifos.drained(2000);
        return status;
      } finally {
        await unary(c, '/containerd.services.tasks.v1.Tasks/DeleteProcess', { container_id: id, exec_id: execId }, ns).catch(() => {});
      }
    } finally {
      fifos.close();
    }
  } finally {
    c.close();
  }
}
