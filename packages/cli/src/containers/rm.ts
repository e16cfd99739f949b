// `berth rm [-f] CONTAINER...`: docker rm. The task, the container, its snapshot and its log go;
// a running one only with -f (killed first). `rm-on-exit` is what `run -d --rm` leaves behind.
import { parseArgs } from 'node:util';
import { client, containerCommon, CommandError } from '../grpc.js';
import { eachContainer, getContainer, removeContainer, waitTask } from './lifecycle.js';

export async function rmCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...containerCommon, force: { type: 'boolean', short: 'f', default: false } } });
  if (!positionals.length) throw new CommandError('"berth rm" requires at least 1 argument.\nusage: berth rm [-f] CONTAINER...');
  const ns = values.namespace;
  await eachContainer(values.address, positionals, async (c, id) => removeContainer(c, ns, await getContainer(c, ns, id), values.force));
}

export async function rmOnExitCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...containerCommon } });
  const id = positionals[0]!;
  const c = client(values.address);
  try {
    await waitTask(c, values.namespace, id);
    await removeContainer(c, values.namespace, await getContainer(c, values.namespace, id), true);
  } finally {
    c.close();
  }
}
