// Mounting a list of containerd Mounts on a temporary folder, as containerd's
// mount.WithTempMount does. Private until the snapshot service exports its mount helper.
import { mkdtempSync, mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { mountAll, unmountAll, MNT, type MountSpec } from '@berth/native';

export async function withTempMount<R>(tmpRoot: string, mounts: readonly MountSpec[], fn: (root: string) => Promise<R>): Promise<R> {
  mkdirSync(tmpRoot, { recursive: true, mode: 0o700 });
  const dir = mkdtempSync(join(tmpRoot, 'mount-'));
  let mounted = 0;
  try {
    for (const m of mounts) {
      mountAll(m, dir);
      mounted++;
    }
    return await fn(dir);
  } finally {
    if (mounted > 0) unmountAll(dir, MNT.DETACH);
    rmdirSync(dir);
  }
}

/** The upperdir and lowerdirs (top first) of an overlay mount's options, as containerd's getOverlayPath. */
export function overlayPaths(options: readonly string[]): { upper: string; lowers: string[] } | null {
  let upper = '';
  let lowers: string[] = [];
  for (const o of options) {
    if (o.startsWith('upperdir=')) upper = o.slice('upperdir='.length);
    else if (o.startsWith('lowerdir=')) lowers = o.slice('lowerdir='.length).split(':');
  }
  return upper ? { upper, lowers } : null;
}
