// What other Berth services use of the snapshotter: the mount helper (diff, shim) and, for
// tests and tools, the snapshotter library itself.
export { mountAll, unmountAll, withTempMount, type MountSpec } from './mount.js';
export { Snapshotter, type Info, type Ctx, type Labels } from './local.js';
export { Overlay, Native, type Driver, type Kind } from './drivers.js';
export { diskUsage, type Usage } from './usage.js';
