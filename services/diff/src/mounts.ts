// Mounts for applying and comparing: the snapshot service's helper (containerd's
// mount.WithTempMount), and where an overlay mount keeps its upper and lower layers.
export { withTempMount } from '@berth/snapshot';

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
