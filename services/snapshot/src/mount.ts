// Mounting what a snapshotter returns: the one helper the diff service and the shim use to turn
// containerd Mount records into a mounted root. The syscalls are @berth/native's; its mountAll
// mounts one record as containerd's Mount.Mount does, including the deep-chain case: when an
// overlay's options outgrow the page mount(2) accepts, the lowerdirs are made relative to the
// folder that holds every layer and the mount is made from a helper thread that unshares its
// working directory (CLONE_FS) and chdirs there. So the process-wide cwd of Node is never
// touched, and other threads (libuv's pool) never see it change.
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MNT, mountAll as mountOne, umount2, type MountSpec } from '@berth/native';

export type { MountSpec };

/** Mounts every record on `target`, in order (later ones stack on earlier ones, as containerd's mount.All). */
export function mountAll(mounts: readonly MountSpec[], target: string): void {
  for (const m of mounts) mountOne(m, target);
}

/**
 * Unmounts everything stacked on `target`. A busy mount is retried for a while (a process that
 * had it open may still be exiting), then detached rather than left behind.
 */
export async function unmountAll(target: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      umount2(target, 0);
      continue; // there may be another mount under it
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EINVAL' || code === 'ENOENT') return;
      if (code !== 'EBUSY') throw e;
      if (attempt >= 50) {
        umount2(target, MNT.DETACH);
        continue;
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Mounts `mounts` on a fresh temp dir for the length of `fn`, then unmounts and removes it. */
export async function withTempMount<T>(mounts: readonly MountSpec[], fn: (root: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-mount-'));
  try {
    mountAll(mounts, dir);
  } catch (e) {
    await unmountAll(dir); // a stack may be half made
    await rmdir(dir);
    throw e;
  }
  try {
    return await fn(dir);
  } finally {
    await unmountAll(dir);
    // never recursive: if anything were still mounted here, its files must not be deleted
    await rmdir(dir);
  }
}
