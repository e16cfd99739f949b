// Mounts for applying and comparing: the snapshot service's helper (containerd's
// mount.WithTempMount), and where an overlay mount keeps its upper and lower layers.
export { withTempMount } from '@berth/snapshot/mount';

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

/**
 * `mounts` made read-only as containerd's readonlyMounts does: `ro` for most; an overlay loses its
 * upperdir and workdir, the upperdir becoming its top lowerdir.
 */
export function readonlyMounts(mounts: readonly { type: string; source: string; options: string[] }[]): { type: string; source: string; options: string[] }[] {
  return mounts.map((m) => {
    if (m.type === 'overlay') {
      const upper = m.options.find((o) => o.startsWith('upperdir='))?.slice('upperdir='.length);
      const out = m.options.filter((o) => !o.startsWith('upperdir=') && !o.startsWith('workdir='));
      return { ...m, options: upper ? out.map((o) => (o.startsWith('lowerdir=') ? `lowerdir=${upper}:${o.slice('lowerdir='.length)}` : o)) : out };
    }
    return { ...m, options: [...m.options.filter((o) => o !== 'rw' && o !== 'ro'), 'ro'] };
  });
}
