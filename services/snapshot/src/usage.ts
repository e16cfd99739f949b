// Disk usage of a snapshot's own directory, as containerd's continuity fs.DiskUsage counts it:
// every inode once (hard links are not counted twice), its allocated blocks × 512 bytes.
import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';

export interface Usage {
  size: number;
  inodes: number;
}

export async function diskUsage(root: string, signal?: AbortSignal): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (path: string): Promise<void> => {
    signal?.throwIfAborted();
    const st = await lstat(path, { bigint: true });
    const id = `${st.dev}:${st.ino}`;
    if (!seen.has(id)) {
      seen.add(id);
      size += Number(st.blocks) * 512;
    }
    if (!st.isDirectory()) return;
    for await (const e of await opendir(path)) await visit(join(path, e.name));
  };
  await visit(root);
  return { size, inodes: seen.size };
}
