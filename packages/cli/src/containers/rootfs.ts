// Files of a prepared rootfs read without mounting it: the client runs next to the snapshotter,
// and an overlay's (or a bind's) folders are plain directories, topmost first.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Mount {
  type: string;
  source: string;
  options: string[];
}

function layers(mounts: Mount[]): string[] {
  const dirs: string[] = [];
  for (const m of mounts) {
    if (m.type === 'bind') dirs.push(m.source);
    else if (m.type === 'overlay') {
      const opt = (k: string) => m.options.find((o) => o.startsWith(`${k}=`))?.slice(k.length + 1);
      const upper = opt('upperdir');
      if (upper) dirs.push(upper);
      dirs.push(...(opt('lowerdir')?.split(':') ?? []));
    }
  }
  return dirs;
}

/** The file at `path` in the rootfs, from its topmost layer that has it; undefined if none. */
export function readRootfsFile(mounts: Mount[], path: string): string | undefined {
  for (const dir of layers(mounts)) {
    try {
      return readFileSync(join(dir, path), 'utf8');
    } catch {
      // not in this layer
    }
  }
  return undefined;
}
