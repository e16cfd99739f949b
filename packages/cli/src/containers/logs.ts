// `berth logs [-f]`: a container's log file (its stdout and stderr: the shim wrote a detached
// one's, `berth run` copied an attached one's); -f follows it until the task ends, as docker's does.
import { closeSync, openSync, readSync, watch } from 'node:fs';
import { parseArgs } from 'node:util';
import { client, containerCommon, CommandError } from '../grpc.js';
import { getContainer, getTask, isLive, labels, waitTask } from './lifecycle.js';

/** Copies what the file has past `offset` to stdout; returns the new offset. */
function copyFrom(fd: number, offset: number): number {
  const buf = Buffer.allocUnsafe(1 << 16);
  for (;;) {
    const n = readSync(fd, buf, 0, buf.length, offset);
    if (n === 0) return offset;
    process.stdout.write(buf.subarray(0, n));
    offset += n;
  }
}

export async function logsCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...containerCommon, follow: { type: 'boolean', short: 'f', default: false } } });
  const id = positionals[0];
  if (!id || positionals.length > 1) throw new CommandError('"berth logs" requires exactly 1 argument.\nusage: berth logs [-f] CONTAINER');
  const c = client(values.address);
  try {
    const container = await getContainer(c, values.namespace, id);
    const path = container.labels[labels.log];
    if (!path) throw new CommandError(`Error: container ${id} has no log: only \`berth run\` keeps one (not ctr, not run --rm)`);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      // started but its task not yet created, or created by another client
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    try {
      let offset = copyFrom(fd, 0);
      if (!values.follow || !isLive(await getTask(c, values.namespace, id))) return;
      const exited = waitTask(c, values.namespace, id).catch(() => 0);
      const watcher = watch(path);
      let wake: () => void = () => {};
      watcher.on('change', () => wake());
      try {
        let done = false;
        void exited.then(() => {
          done = true;
          wake();
        });
        while (!done) {
          offset = copyFrom(fd, offset);
          // a watch can miss a write that lands between the read and the wait: poll too
          await new Promise<void>((r) => {
            const t = setTimeout(r, 500);
            wake = () => {
              clearTimeout(t);
              r();
            };
          });
        }
        copyFrom(fd, offset);
      } finally {
        watcher.close();
      }
    } finally {
      closeSync(fd);
    }
  } finally {
    c.close();
  }
}
