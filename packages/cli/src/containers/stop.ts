// `berth stop [-t SECONDS] CONTAINER...`: docker stop. The image's stop signal (SIGTERM unless it
// names another), SIGKILL after the timeout, then the task goes and its exit stays on the
// container for `ps -a`. Prints each container stopped; fails (status 1) if any could not be.
import { parseArgs } from 'node:util';
import { containerCommon, CommandError } from '../grpc.js';
import { eachContainer, getContainer, getTask, isLive, retireTask, stopTask } from './lifecycle.js';

export async function stopCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...containerCommon, time: { type: 'string', short: 't', default: '10' } } });
  if (!positionals.length) throw new CommandError('"berth stop" requires at least 1 argument.\nusage: berth stop [-t SECONDS] CONTAINER...');
  const seconds = Number(values.time);
  if (!Number.isFinite(seconds) || seconds < 0) throw new CommandError(`invalid -t: ${values.time}`);
  const ns = values.namespace;
  await eachContainer(values.address, positionals, async (c, id) => {
    const container = await getContainer(c, ns, id);
    if (isLive(await getTask(c, ns, id))) await stopTask(c, ns, container, seconds);
    await retireTask(c, ns, id);
  });
}
