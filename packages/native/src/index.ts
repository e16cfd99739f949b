// @berth/native: the Linux calls Node lacks, for the snapshotter, the diff service and the shim
// host. Nothing else in Berth makes these calls; errors are Node-style system errors (code,
// errno, syscall, path), as fs throws them.
export * from './fs.js';
export * from './resolve.js';
export * from './process.js';
export * from './socket.js';
export * from './memory.js';
export { addonPath } from './addon.js';
